"""Memory banks of contrastive distillation losses: storage, sampling and synchronised updates.

A :class:`ContrastMemoryBank` holds one loss's student and teacher banks (N x D),
its normalisation constants and its negative sampler. It is created and owned
by :class:`~crd_mm.memory.CRDMemoryBankHook`; losses that derive from
:class:`MemoryBankClient` only read it and stage their batch's embeddings. The
hook then applies the staged updates of *all* ranks at once, so every rank holds
bit-identical banks, and nothing is part of the DDP-wrapped model's state.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from mmengine import dist
from mmengine.logging import print_log

from .base import BANK, MEMORIES, BaseContrastMemory, normalizer_checksum, state_checksum

NEGATIVE_SAMPLING_MODES = ('class_exact', 'uniform')
INIT_CHUNKS = 16
POSITIVE_MODES = ('exact', 'relax')


def all_gather_varying(tensor: torch.Tensor) -> List[torch.Tensor]:
    """Every rank's ``tensor`` (rows may differ in number per rank), in rank order."""
    if dist.get_world_size() == 1:
        return [tensor]
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [int(s.item()) for s in dist.all_gather(size)]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    return [part[:n] for part, n in zip(dist.all_gather(padded), sizes)]


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (rows may differ in number per rank) from all ranks, in rank order."""
    return torch.cat(all_gather_varying(tensor))


def initial_rows(
    num_samples: int,
    feat_dim: int,
    stream: int,
    dtype=torch.float32,
    start: int = 0,
    stop: Optional[int] = None,
) -> torch.Tensor:
    """Rows ``[start, stop)`` of CRD's initial N x D bank, on the CPU.

    Uniform in [-s, s], s = 1 / sqrt(D / 3).

    The rows are always drawn on the CPU (and moved by the caller): CUDA's
    ``uniform_`` maps elements to random streams by launch grid, so the same
    seed would give different banks on different GPU models and on the CPU.
    torch's CPU generator is sequential, so fixed chunks of rows (N split into
    ``INIT_CHUNKS``) are filled from their own generators in parallel threads
    (an ImageNet bank is 164M numbers); the chunking, and so the values, do not
    depend on the number of threads, the device or the slice asked for: only
    the chunks that overlap ``[start, stop)`` are drawn (a bank shard).
    """
    stop = num_samples if stop is None else stop
    stdv = 1.0 / math.sqrt(feat_dim / 3)
    size = -(-num_samples // INIT_CHUNKS)  # rows per chunk, as Tensor.chunk(INIT_CHUNKS) splits N
    rows = torch.empty(max(0, stop - start), feat_dim, dtype=dtype)

    def fill(chunk):
        low, high = chunk * size, min((chunk + 1) * size, num_samples)
        generator = torch.Generator().manual_seed(stream * INIT_CHUNKS + chunk)
        if start <= low and high <= stop:  # a whole chunk: drawn in place
            rows[low - start : high - start].uniform_(-stdv, stdv, generator=generator)
        else:  # a chunk cut by the slice: drawn whole, only the overlap kept
            drawn = torch.empty(high - low, feat_dim, dtype=dtype).uniform_(
                -stdv, stdv, generator=generator
            )
            first, last = max(low, start), min(high, stop)
            rows[first - start : last - start] = drawn[first - low : last - low]

    chunks = range(start // size, -(-stop // size)) if stop > start else range(0)
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        list(pool.map(fill, chunks))
    return rows


def first_batch_normalizers(
    scores_student: torch.Tensor,
    scores_teacher: torch.Tensor,
    population: int,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(Z_s, Z_t) = mean(exp(score)) x population over one batch's (``valid``) scores.

    Averaged over ranks.

    ``population`` is the size of the set the negatives are drawn from (N for
    a bank, Q for a queue), so that P = exp(s) / Z and Pn = 1 / population
    are on the same scale. Collective.
    """
    means = []
    for scores in (scores_student, scores_teacher):
        exp = scores.detach().float().exp()
        means.append(exp.mean() if valid is None else (exp * valid).sum() / valid.sum())
    z = torch.stack(means) * population
    dist.all_reduce(z, op='mean')
    if not torch.isfinite(z).all():
        raise FloatingPointError(
            f'CRD normalisation constants from the first batch are not finite ({z.tolist()}): '
            'the embeddings or the temperature produce overflowing scores'
        )
    return z


def gathered_updates(
    staged: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    feat_dim: int,
    device,
    index_columns: int = 1,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every rank's staged (index, [student | teacher]) rows, under the update rules. Collective.

    Rows with non-finite embeddings are dropped with a warning. An index seen
    more than once (mmengine's sampler pads the last batch by repeating
    samples) is kept once, at its first occurrence in rank order, so the result
    never depends on scatter order. Rows stay in first-occurrence order.

    With ``index_columns`` > 1 each staged index is (B, index_columns): the
    sample index, then integers that travel with the row (a queue's labels);
    duplicates are still found by the sample index alone. Defaults to 1.
    """
    if staged:
        idx = torch.cat([s[0] for s in staged])
        rows = torch.cat([torch.cat(s[1:], dim=1) for s in staged])
    else:
        shape = (0,) if index_columns == 1 else (0, index_columns)
        idx = torch.zeros(shape, dtype=torch.long, device=device)
        rows = torch.zeros(0, 2 * feat_dim, device=device)
    idx, rows = gather_rows(idx.to(device)), gather_rows(rows.to(device))
    finite = torch.isfinite(rows).all(dim=1)
    if not bool(finite.all()):
        print_log(
            f'memory bank: skipped the update of {int((~finite).sum())} sample(s) '
            'with non-finite embeddings; the bank rows keep their values',
            logger='current',
            level=30,
        )
        idx, rows = idx[finite], rows[finite]
    if idx.shape[0] == 0:
        return idx, rows
    samples = idx if index_columns == 1 else idx[:, 0]
    unique, inverse = torch.unique(samples, return_inverse=True)
    first = torch.full_like(unique, samples.numel()).scatter_reduce_(
        0, inverse, torch.arange(samples.numel(), device=idx.device), reduce='amin'
    )
    first = first.sort().values
    return idx[first], rows[first]


def momentum_update(
    bank: torch.Tensor, rows: torch.Tensor, new: torch.Tensor, momentum: float
) -> torch.Tensor:
    """bank[rows] = normalize(m * bank[rows] + (1 - m) * new), in place; returns the mixes' norms.

    A mix that cancels to zero stays zero instead of becoming NaN; float64
    banks keep their precision (the mix is at least float32).
    """
    with torch.no_grad():
        mixed = bank.index_select(0, rows).to(torch.promote_types(bank.dtype, torch.float32))
        mixed.mul_(momentum).add_(new * (1 - momentum))
        norm = mixed.pow(2).sum(1, keepdim=True).pow(0.5)
        bank.index_copy_(0, rows, mixed.div(norm.clamp_min(1e-12)).to(bank.dtype))
    return norm.squeeze(1)


def checked_labels(labels, num_samples: int) -> torch.Tensor:
    """The training set's labels as a CPU long tensor, refused unless class-aware sampling works.

    One non-negative class per sample, and at least two classes.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.shape != (num_samples,):
        raise ValueError(
            f'expected one label per sample ({num_samples}), '
            f'got labels of shape {tuple(labels.shape)}'
        )
    if labels.min() < 0:
        raise ValueError('class-aware sampling needs a non-negative class label for every sample')
    if bool((labels == labels[0]).all()):
        raise ValueError(
            'every training sample has the same class: class-aware negatives '
            "are impossible; use negative_sampling='uniform'"
        )
    return labels


def label_mismatch_error(sample: int, claimed: int, expected: int) -> ValueError:
    """The error for a data sample whose label is not its training-set label."""
    return ValueError(
        f'sample {sample} has label {claimed} in its data sample but {expected} in the '
        'training set the memory was built from: the sample indices do not point into the '
        'training dataset (a different dataset, or a dataset wrapper other than ConcatDataset, '
        'RepeatDataset and ClassBalancedDataset, which the memory hook maps?); CRD needs the '
        "dataset's own indices"
    )


class Contrast(NamedTuple):
    """The rows a loss scores, as a memory selected them for one batch.

    ``student``/``teacher``: rows (the banks themselves, rows fetched from
    shards, or a queue); ``positive`` (B,) and ``negative`` (B, K) or (K,)
    index into them; ``valid`` (B, K + 1) masks left-out negatives (None: all
    valid; column 0, the positive, is always True): a shared negative that is
    the anchor's own row, or a queued entry of the anchor's sample or class;
    ``noise_size``: the size of the set negatives come from (Pn = 1 /
    noise_size).
    """

    student: torch.Tensor
    teacher: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    valid: Optional[torch.Tensor]
    noise_size: int


@MEMORIES.register_module()
class ContrastMemoryBank(BaseContrastMemory):
    """Student and teacher embedding banks of one loss, as in CRD (Tian et al., ICLR 2020).

    Args:
        num_samples (int): N, the training-set size; one row per dataset index.
        feat_dim (int): D, the embedding width.
        momentum (float): m in ``row = normalize(m * row + (1 - m) * embedding)``.
        labels (Tensor, optional): (N,) class of every sample; needed for
            class-aware negatives and for relaxed positives.
        device: where the banks live (the model's device).
        dtype: storage dtype; float16 halves an ImageNet bank (scores are
            always computed in float32).
        seed (int): seeds the initial rows and, with the rank and the
            iteration, the negative sampler; must be the same on every rank
            (the hook makes sure of it).
    """

    def __init__(
        self,
        num_samples: int,
        feat_dim: int,
        momentum: float,
        labels: Optional[torch.Tensor] = None,
        device='cpu',
        dtype=torch.float32,
        seed: int = 0,
    ):
        if num_samples < 2:
            raise ValueError(f'a memory bank needs at least 2 samples, got {num_samples}')
        self.num_samples = num_samples
        self.feat_dim = feat_dim
        self.momentum = momentum
        self.device = torch.device(device)
        self.dtype = dtype
        self.seed = seed
        self.student = self._uniform_rows(seed * 2)
        self.teacher = self._uniform_rows(seed * 2 + 1)
        self.normalizers: Optional[torch.Tensor] = None  # (Z_student, Z_teacher)
        self.written = torch.zeros(num_samples, dtype=torch.bool, device=self.device)
        self.sampler = torch.Generator(device=self.device)
        self._staged: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.labels = None  # (N,) every sample's class (replicated bank only)
        self.class_count = None  # (C,) samples per class; None: no class-aware sampling
        if labels is not None:
            self._index_classes(checked_labels(labels, num_samples))

    kind = BANK

    @classmethod
    def from_spec(cls, spec, num_samples, labels, device, dtype, seed):
        """A bank of ``num_samples`` rows of ``spec['feat_dim']``, momentum ``spec['momentum']``."""
        return cls(
            num_samples,
            spec['feat_dim'],
            spec['momentum'],
            labels=labels,
            device=device,
            dtype=dtype,
            seed=seed,
        )

    def _uniform_rows(self, stream: int) -> torch.Tensor:
        """CRD's initial rows (:func:`initial_rows`), identical on every rank and device."""
        return initial_rows(self.num_samples, self.feat_dim, stream, self.dtype).to(self.device)

    def fingerprint(self) -> torch.Tensor:
        """A float64 checksum of both banks, Z and the written mask (compares ranks cheaply)."""
        rows = state_checksum([self.student, self.teacher], [self.written])
        return torch.cat([rows, normalizer_checksum(self.normalizers, self.device)])

    def _index_classes(self, labels: torch.Tensor):
        """Sort sample indices by class so that per-class draws are offsets into one array."""
        labels = labels.to(self.device)
        self.labels = labels
        self.order = torch.argsort(labels, stable=True)
        self.class_count = torch.bincount(labels)
        self.class_start = torch.cumsum(self.class_count, 0) - self.class_count

    # ----------------------------------------------------------------- sampling
    def reseed(self, iteration: int):
        """Make the sampler a function of (seed, rank, iteration): a resume draws the same."""
        state = (self.seed * 1_000_003 + dist.get_rank()) * 1_000_000_007 + iteration
        self.sampler.manual_seed(state % (2**63 - 1))

    def check_indices(self, idx: torch.Tensor):
        """Raise before anything is read or written if an index falls outside the bank."""
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            bad = idx[(idx < 0) | (idx >= self.num_samples)][:5].tolist()
            raise IndexError(
                f'sample_idx {bad} outside the memory bank of {self.num_samples} samples. The '
                'bank is sized from the training dataset by CRDMemoryBankHook; the indices must '
                "be that dataset's own indices (mmengine's BaseDataset sets them)."
            )

    def anchor_labels(
        self, idx: torch.Tensor, claimed: Optional[torch.Tensor] = None
    ) -> Optional[torch.Tensor]:
        """The training-set class of each batch sample ``idx``; None without class-aware sampling.

        ``claimed`` (B,), the labels the data samples carry (None if they carry
        none), must agree: a mismatch means the indices do not point into the
        training set, and is refused before anything is read or written.
        """
        if self.class_count is None:
            return None
        expected = self.labels[idx]
        if claimed is not None:
            mismatch = (expected != claimed.to(expected.device)).nonzero().flatten()
            if mismatch.numel():
                i = int(mismatch[0])
                raise label_mismatch_error(int(idx[i]), int(claimed[i]), int(expected[i]))
        return expected

    def _require_labels(self, what):
        if self.class_count is None:
            raise ValueError(
                f'{what} needs class labels, but the training dataset provides none '
                "(no get_gt_labels()); use negative_sampling='uniform' and positive='exact'"
            )

    def keys_in_class_order(self, positions: torch.Tensor) -> torch.Tensor:
        """The bank keys of ``positions`` in the class-sorted sample order: the sample indices.

        A :class:`ShardedMemoryBank` holds no N-sized order and returns N + position instead.
        """
        return self.order[positions]

    def positives(
        self, idx: torch.Tensor, mode: str, labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The positive of each sample: itself ('exact') or a random same-class sample ('relax').

        ``labels``: the samples' classes as :meth:`anchor_labels` returned them
        (None: looked up). Defaults to None.
        """
        if mode == 'exact':
            return idx
        self._require_labels("positive='relax'")
        cls = self.anchor_labels(idx) if labels is None else labels
        offset = (
            torch.rand(idx.shape, generator=self.sampler, device=self.device, dtype=torch.float64)
            * self.class_count[cls]
        )
        offset = offset.long().clamp_(max=self.class_count[cls] - 1)
        return self.keys_in_class_order(self.class_start[cls] + offset)

    def negatives(
        self,
        idx: torch.Tensor,
        num: int,
        mode: str,
        shared: bool,
        labels: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Negative bank keys: (B, num) drawn per sample, or (num,) shared by the whole batch.

        'class_exact' draws, for a sample of class c, uniformly among the N - n_c
        samples of other classes: one uniform offset into the class-sorted
        index array with class c's block skipped, so no per-class lists are
        built. 'uniform' draws among all samples but the sample itself. Draws
        are with replacement (as in the authors' ImageNet code). Shared
        negatives are drawn among all N samples, so a batch sample's own row
        can be among them: :meth:`select` masks it out of that sample's
        negatives. ``labels``: the samples' classes as :meth:`anchor_labels`
        returned them (None: looked up). Defaults to None.
        """
        gen, dev = self.sampler, self.device
        if shared:
            return torch.randint(0, self.num_samples, (num,), generator=gen, device=dev)
        if mode == 'uniform':
            neg = torch.randint(
                0, self.num_samples - 1, (idx.numel(), num), generator=gen, device=dev
            )
            return neg + (neg >= idx[:, None]).long()
        self._require_labels("negative_sampling='class_exact'")
        cls = self.anchor_labels(idx) if labels is None else labels
        others = (self.num_samples - self.class_count[cls])[:, None]
        offset = torch.rand((idx.numel(), num), generator=gen, device=dev, dtype=torch.float64)
        offset = (offset * others).long().clamp_(max=others - 1)
        offset += (offset >= self.class_start[cls][:, None]) * self.class_count[cls][:, None]
        return self.keys_in_class_order(offset)

    # ---------------------------------------------------------------- reading
    def contrast_rows(
        self, *indices: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Tuple[torch.Tensor, ...]]:
        """The student rows, teacher rows and ``indices`` into them: here the banks and ``indices``.

        The one way losses read rows, so that a ``ShardedMemoryBank`` can fetch them instead.
        """
        return self.student, self.teacher, indices

    def select(
        self,
        positive: torch.Tensor,
        negative: torch.Tensor,
        anchors: Optional[torch.Tensor] = None,
    ) -> Contrast:
        """The rows of given positive and negative bank indices, for scoring.

        With shared negatives (K,) and the batch's own bank rows ``anchors``
        (B,), a negative that is anchor i's own row is masked out of anchor
        i's negatives (``valid``), as per-sample negatives never draw it; the
        NCE term of anchor i then counts its own K_i valid negatives.
        """
        valid = None
        if anchors is not None and negative.dim() == 1:
            own = negative[None, :] == anchors[:, None]
            valid = torch.cat([own.new_ones(anchors.numel(), 1), ~own], 1)
        student, teacher, (positive, negative) = self.contrast_rows(positive, negative)
        return Contrast(student, teacher, positive, negative, valid, self.num_samples)

    def contrast(
        self,
        idx: torch.Tensor,
        student: torch.Tensor,
        teacher: torch.Tensor,
        positive: str,
        num_negatives: int,
        negative_sampling: str,
        shared: bool,
        labels: Optional[torch.Tensor] = None,
    ) -> Contrast:
        """Draw the batch's positives and negatives and select their rows (one call per loss step).

        ``student``/``teacher`` (the batch's embeddings) are not read by a bank;
        a ``ContrastQueue`` takes the same call. ``labels``: the samples'
        classes as :meth:`anchor_labels` returned them (None: looked up where
        needed). Defaults to None.
        """
        return self.select(
            self.positives(idx, positive, labels),
            self.negatives(idx, num_negatives, negative_sampling, shared, labels),
            anchors=idx,
        )

    # ---------------------------------------------------------- normalisation
    def log_normalizers(
        self,
        scores_student: torch.Tensor,
        scores_teacher: torch.Tensor,
        valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """(log Z_s, log Z_t) for scores s = <row, anchor> / T, with P = exp(s) / Z.

        Z is set once from the first batch (mean of exp(s) x N, averaged over
        ranks: a collective on that batch) and then kept, as in the paper.
        """
        if self.normalizers is None:
            self.normalizers = first_batch_normalizers(
                scores_student, scores_teacher, self.num_samples, valid
            )
        return self.normalizers.log()

    # ---------------------------------------------------------------- updates
    def stage(
        self,
        idx: torch.Tensor,
        student: torch.Tensor,
        teacher: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
    ):
        """Keep this rank's batch until :meth:`apply_staged` (called by the hook after the step).

        ``labels`` (a queue's call) are not needed by a bank. Defaults to None.
        """
        self._staged.append(
            (idx.detach().long(), student.detach().float(), teacher.detach().float())
        )

    def apply_staged(self) -> Dict[str, float]:
        """Gather every rank's staged rows and apply the identical momentum update on each rank.

        Rows with non-finite embeddings are dropped with a warning. An index seen
        more than once (mmengine's sampler pads the last batch by repeating
        samples) is updated once, from its first occurrence in rank order, so
        the result never depends on scatter order. Collective: every rank calls it.
        """
        idx, rows = gathered_updates(self._staged, self.feat_dim, self.device)
        self._staged = []
        if idx.numel() == 0:
            return {}
        norms = [
            float(
                momentum_update(self.student, idx, rows[:, : self.feat_dim], self.momentum).mean()
            ),
            float(
                momentum_update(self.teacher, idx, rows[:, self.feat_dim :], self.momentum).mean()
            ),
        ]
        self.written[idx] = True
        return dict(
            update_norm_s=norms[0],
            update_norm_t=norms[1],
            coverage=float(self.written.float().mean()),
        )

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return dict(
            kind=self.kind,
            num_samples=self.num_samples,
            feat_dim=self.feat_dim,
            seed=self.seed,
            student=self.student.cpu(),
            teacher=self.teacher.cpu(),
            normalizers=None if self.normalizers is None else self.normalizers.cpu(),
            written=self.written.cpu(),
        )

    def load_state_dict(self, state: dict, name: str = 'memory bank'):
        """Restore from :meth:`state_dict`; the training set must be the bank's own."""
        if state['num_samples'] != self.num_samples or state['feat_dim'] != self.feat_dim:
            raise ValueError(
                f"the checkpoint's {name} holds {state['num_samples']} x {state['feat_dim']} "
                'rows but the current training set and loss need '
                f'{self.num_samples} x {self.feat_dim}. Resume with the training set the '
                'checkpoint was trained on, or start a new run with load_from= (weights only) '
                'so that the banks are built afresh.'
            )
        self.student = state['student'].to(self.device, self.dtype)
        self.teacher = state['teacher'].to(self.device, self.dtype)
        z = state['normalizers']
        self.normalizers = None if z is None else z.to(self.device)
        self.written = state['written'].to(self.device)
        self.seed = state['seed']
        self._staged = []


class MemoryBankClient:
    """Mixin for losses that read a :class:`ContrastMemoryBank` owned by ``CRDMemoryBankHook``.

    The bank is a plain attribute, not a parameter or buffer: it never enters the
    DDP-wrapped model's state, broadcasts or ``state_dict``.
    """

    memory_bank: Optional[BaseContrastMemory] = None

    def bank_requirements(self) -> dict:
        """What the hook needs to build this loss's bank: feat_dim, momentum, needs_labels."""
        raise NotImplementedError

    def attach_memory_bank(self, bank: BaseContrastMemory):
        self.memory_bank = bank

    def check_distiller(self, distiller, loss_name: str) -> None:
        """Check, before training, how the distiller feeds this loss; by default nothing.

        Args:
            distiller: the mmrazor distiller whose ``distill_losses[loss_name]``
                is this loss (its connectors and ``loss_forward_mappings``).
            loss_name (str): this loss's name in the distiller.
        """

    def require_memory_bank(self) -> BaseContrastMemory:
        if self.memory_bank is None:
            raise RuntimeError(
                f'{type(self).__name__} needs a memory bank, which CRDMemoryBankHook owns: add '
                "custom_hooks = [dict(type='CRDMemoryBankHook')] to the config (and import crd_mm "
                "with custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False))."
            )
        return self.memory_bank
