"""ContrastQueue: CRD's negatives from a FIFO of the Q most recent embeddings, not N x D banks.

The CRD author's answer for datasets whose banks do not fit (HobbitLong/RepDistiller#40),
in the spirit of MoCo's queue: memory is O(Q x D), independent of the dataset size N.
"""

from typing import Dict, Optional

import torch
from mmengine import dist

from .bank import (
    Contrast,
    ContrastMemoryBank,
    first_batch_normalizers,
    gathered_updates,
    initial_rows,
)
from .base import MEMORIES, QUEUE, BaseContrastMemory, normalizer_checksum, state_checksum


@MEMORIES.register_module()
class ContrastQueue(BaseContrastMemory):
    """The Q most recent student and teacher embeddings of all ranks, in a ring buffer.

    The buffer is identical on every rank.

    For a student anchor the positive is the sample's own teacher embedding and
    the negatives are the Q queued teacher embeddings (symmetrically for teacher
    anchors); none carries gradient, as bank rows do not. Queued entries of the
    anchor's own sample, and with class labels those of its class, are masked
    out of its negatives. Entries start as random rows drawn like a Q-sample
    bank's initial rows (sample index -1, no class), so the queue is full from
    the first step, as MoCo's.

    NCE normalisation: negatives are drawn uniformly from the Q queued entries,
    so the noise distribution is Pn = 1/Q, and Z = mean(exp(score)) x Q is set
    from the first batch (averaged over ranks) and kept: the bank's rule with
    N replaced by the size of the set the negatives come from.

    Memory: Q x D x bytes x 2 for the entries plus 16 Q bytes (their sample
    indices and labels); nothing grows with N. Class-aware masking labels each
    entry with its data sample's ``gt_label``, which the loss passes to
    :meth:`anchor_labels`, :meth:`contrast` and :meth:`stage`: the queue keeps
    no training-set labels, so it trusts the data samples' labels and cannot
    check them against the training set (a bank does).

    Args:
        num_samples (int): N, the training-set size (to check sample indices).
        queue_size (int): Q, 1 <= Q <= N.
        feat_dim (int): D.
        labels (Tensor, optional): (N,) class of every sample, given when the
            loss samples by class: it makes the queue class-aware (it then
            needs every batch's labels) and is not kept. Defaults to None.
        device, dtype: where and how the entries are stored.
        seed (int): seeds the initial entries.
    """

    kind = QUEUE
    check_indices = ContrastMemoryBank.check_indices  # same rules, on num_samples

    def __init__(
        self,
        num_samples: int,
        queue_size: int,
        feat_dim: int,
        labels=None,
        device='cpu',
        dtype=torch.float32,
        seed: int = 0,
    ):
        if not 1 <= queue_size <= num_samples:
            raise ValueError(
                f'queue_size must be between 1 and the training-set size ({num_samples}), got '
                f'{queue_size}: a queue longer than the dataset would hold stale copies of the '
                "same samples; use a smaller queue_size or memory='bank'"
            )
        self.num_samples, self.queue_size, self.feat_dim = num_samples, queue_size, feat_dim
        self.device, self.dtype, self.seed = torch.device(device), dtype, seed
        self.student = initial_rows(queue_size, feat_dim, seed * 2, dtype).to(self.device)
        self.teacher = initial_rows(queue_size, feat_dim, seed * 2 + 1, dtype).to(self.device)
        self.sample_idx = torch.full((queue_size,), -1, dtype=torch.long, device=self.device)
        self.entry_labels = torch.full((queue_size,), -1, dtype=torch.long, device=self.device)
        self.head = 0  # the oldest entry, overwritten next
        self.normalizers: Optional[torch.Tensor] = None
        self.class_aware = labels is not None
        self._staged = []
        self._staged_labels = []

    @classmethod
    def from_spec(cls, spec, num_samples, labels, device, dtype, seed):
        """A queue of ``spec['queue_size']`` entries of ``spec['feat_dim']``."""
        return cls(
            num_samples,
            spec['queue_size'],
            spec['feat_dim'],
            labels=labels,
            device=device,
            dtype=dtype,
            seed=seed,
        )

    def reseed(self, iteration: int):
        """Nothing is sampled: every queued entry is a negative."""

    def ordered(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` (an entry-aligned tensor) from the oldest entry to the newest."""
        return torch.roll(rows, -self.head, 0)

    def anchor_labels(
        self, idx: torch.Tensor, claimed: Optional[torch.Tensor] = None
    ) -> Optional[torch.Tensor]:
        """The batch samples' classes for class-aware masking: their data samples' labels.

        None for a queue that is not class-aware. Otherwise collective (one
        all-reduce of one number): if the data samples of any rank carry no
        single ``gt_label`` each (``claimed`` is None), every rank raises the
        same error. The labels are trusted: the queue keeps no training-set
        labels to check them against.
        """
        if not self.class_aware:
            return None
        missing = torch.tensor([float(claimed is None)], device=self.device)
        dist.all_reduce(missing)
        if float(missing) > 0:
            raise ValueError(
                f"CRDLoss(memory='queue', negative_sampling='class_exact'): the data samples of "
                f'{int(missing)} rank(s) carry no single gt_label each; a queue labels its '
                "entries with the data samples' labels (it keeps none of the training set). "
                "Keep 'gt_label' in the packed data samples or use negative_sampling='uniform'"
            )
        return claimed.to(self.device)

    # ---------------------------------------------------------------- reading
    def contrast(
        self,
        idx: torch.Tensor,
        student: torch.Tensor,
        teacher: torch.Tensor,
        positive: str,
        num_negatives: Optional[int],
        negative_sampling: str,
        shared: bool,
        labels: Optional[torch.Tensor] = None,
    ) -> Contrast:
        """Rows: the batch's own (detached) embeddings, then the queue; valid negatives.

        The bank's call; ``positive``, ``num_negatives`` and ``shared`` do not
        apply to a queue (``CRDLoss`` refuses other values). Column 0 of
        ``valid`` (the positive) is always True; a negative is invalid if it is
        a queued copy of the anchor's sample or, with
        ``negative_sampling='class_exact'``, of the anchor's class (``labels``,
        the batch samples' classes from :meth:`anchor_labels`; defaults to None).
        """
        batch = idx.numel()
        rows_s = torch.cat([student.detach().to(self.student.dtype), self.student])
        rows_t = torch.cat([teacher.detach().to(self.teacher.dtype), self.teacher])
        valid = self.sample_idx[None, :] != idx[:, None]
        if negative_sampling == 'class_exact':
            if not self.class_aware:
                raise ValueError(
                    "negative_sampling='class_exact' needs class labels, but the training set "
                    "provides none; use negative_sampling='uniform'"
                )
            if labels is None:
                raise ValueError(
                    "negative_sampling='class_exact' masks the anchors' classes: pass the batch "
                    "samples' labels (labels=, from anchor_labels)"
                )
            valid &= self.entry_labels[None, :] != labels.to(self.device)[:, None]
        valid = torch.cat([valid.new_ones(batch, 1), valid], 1)
        positive = torch.arange(batch, device=self.device)
        negative = torch.arange(batch, batch + self.queue_size, device=self.device)
        return Contrast(rows_s, rows_t, positive, negative, valid, self.queue_size)

    def log_normalizers(
        self,
        scores_student: torch.Tensor,
        scores_teacher: torch.Tensor,
        valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """(log Z_s, log Z_t), Z = Q x mean(exp(score)) over the first batch's valid scores."""
        if self.normalizers is None:
            self.normalizers = first_batch_normalizers(
                scores_student, scores_teacher, self.queue_size, valid
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
        """Keep this rank's batch until :meth:`apply_staged`.

        A class-aware queue needs the samples' ``labels`` (from
        :meth:`anchor_labels`) to label the entries. Defaults to None.
        """
        if self.class_aware:
            if labels is None:
                raise ValueError(
                    "a class-aware queue labels each entry with its sample's class: pass the "
                    "batch samples' labels (labels=, from anchor_labels) to stage"
                )
            self._staged_labels.append(labels.detach().long().to(idx.device))
        self._staged.append(
            (idx.detach().long(), student.detach().float(), teacher.detach().float())
        )

    def apply_staged(self) -> Dict[str, float]:
        """Enqueue every rank's staged embeddings, in rank order, dropping the oldest. Collective.

        The bank's rules apply: non-finite rows are skipped, and a sample seen
        more than once in a step is enqueued once (its first occurrence).
        """
        staged = self._staged
        if self.class_aware:  # each entry's label travels with its row
            staged = [
                (torch.stack([idx, labels], 1), student, teacher)
                for (idx, student, teacher), labels in zip(staged, self._staged_labels)
            ]
        keys, rows = gathered_updates(
            staged, self.feat_dim, self.device, index_columns=2 if self.class_aware else 1
        )
        self._staged, self._staged_labels = [], []
        keys, rows = keys[-self.queue_size :], rows[-self.queue_size :]
        idx = keys[:, 0] if self.class_aware else keys
        if idx.numel():
            slots = (self.head + torch.arange(idx.numel(), device=self.device)) % self.queue_size
            self.student.index_copy_(0, slots, rows[:, : self.feat_dim].to(self.dtype))
            self.teacher.index_copy_(0, slots, rows[:, self.feat_dim :].to(self.dtype))
            self.sample_idx.index_copy_(0, slots, idx)
            if self.class_aware:
                self.entry_labels.index_copy_(0, slots, keys[:, 1])
            self.head = (self.head + idx.numel()) % self.queue_size
        return dict(queue_fill=float((self.sample_idx >= 0).float().mean()))

    def fingerprint(self) -> torch.Tensor:
        """A float64 checksum of the entries, their order and Z (compares ranks cheaply)."""
        order = torch.arange(1, self.queue_size + 1, device=self.device, dtype=torch.float64)
        head = torch.tensor(float(self.head), device=self.device, dtype=torch.float64)
        rows = state_checksum(
            [self.student, self.teacher], [self.sample_idx.double() * order, head]
        )
        return torch.cat([rows, normalizer_checksum(self.normalizers, self.device)])

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return dict(
            kind=self.kind,
            num_samples=self.num_samples,
            queue_size=self.queue_size,
            feat_dim=self.feat_dim,
            seed=self.seed,
            head=self.head,
            student=self.student.cpu(),
            teacher=self.teacher.cpu(),
            sample_idx=self.sample_idx.cpu(),
            entry_labels=self.entry_labels.cpu(),
            normalizers=None if self.normalizers is None else self.normalizers.cpu(),
        )

    def load_state_dict(self, state: dict, name: str = 'queue'):
        """Restore exactly (entries, order, Z); queue size, width and training set must match."""
        saved = (state.get('queue_size'), state['feat_dim'], state['num_samples'])
        if saved != (self.queue_size, self.feat_dim, self.num_samples):
            raise ValueError(
                f"the checkpoint's {name} (queue_size, feat_dim, dataset size) is {saved} but "
                f'this run needs {(self.queue_size, self.feat_dim, self.num_samples)}: resume '
                'with the same config and training set, or start a new run with load_from= '
                '(weights only)'
            )
        self.student = state['student'].to(self.device, self.dtype)
        self.teacher = state['teacher'].to(self.device, self.dtype)
        self.sample_idx = state['sample_idx'].to(self.device)
        self.entry_labels = state['entry_labels'].to(self.device)
        self.head = int(state['head'])
        z = state['normalizers']
        self.normalizers = None if z is None else z.to(self.device)
        self.seed = state['seed']
        self._staged, self._staged_labels = [], []
