"""ShardedMemoryBank: CRD's banks split across ranks, 1/W of every bank's rows on each of W ranks.

Rank r owns the contiguous rows ``[r N / W, (r + 1) N / W)`` of both banks and of the
written mask, so bank memory per rank is N x D x bytes x 2 / W. Sampling is the
replicated bank's (the same generator streams, over the whole dataset); the rows a
rank needs are fetched from their owners, and each owner applies the momentum update
to its own rows. Collectives are mmengine's ``all_gather``/``all_reduce`` only
(gloo has no all-to-all).
"""

from typing import Optional, Tuple

import torch
from mmengine import dist

from .anchor_scores import SHARD_SCORING, AnchorContrast
from .bank import (
    Contrast,
    ContrastMemoryBank,
    all_gather_varying,
    gathered_updates,
    initial_rows,
    label_mismatch_error,
    momentum_update,
)
from .base import MEMORIES, normalizer_checksum, state_checksum

# rows read at once from a slice file when a checkpoint is resumed (the one chunk a rank holds
# beside its shard)
CHECKPOINT_CHUNK_ROWS = 1 << 16
# the state tensors split by rows across the ranks, in rank order
ROW_KEYS = ('student', 'teacher', 'written')


def shard_bounds(num_samples: int, world_size: int) -> torch.Tensor:
    """(W + 1,) row boundaries: rank r owns rows ``[bounds[r], bounds[r + 1])``."""
    return torch.tensor([r * num_samples // world_size for r in range(world_size + 1)])


@MEMORIES.register_module()
class ShardedMemoryBank(ContrastMemoryBank):
    """A :class:`ContrastMemoryBank` whose rows are split across the ranks of the default group.

    Same constructor and interface as the replicated bank; the union of the
    shards equals, row for row, the replicated bank of the same seed and run.
    ``student``/``teacher``/``written`` hold this rank's shard only.

    Class-aware sampling (``labels``) draws exactly the replicated bank's
    samples with no N-sized state: a draw by class is a position in the
    class-sorted sample order, addressed by the key N + position (keys below N
    are sample indices). Within a class that order lists the samples by
    ascending index, so by owner: a run of S segments, one per (class, owner)
    pair with samples. Every rank keeps the classes' sizes and starts (C each)
    and each segment's start and owner (S each; S <= min(C W, N), at most
    C + W - 1 for a dataset listed class by class), which gives a key's owner
    (:meth:`owner`); only the owner turns it into a row (:meth:`local_rows`),
    through its own rows' classes and their class-sorted order (N / W each)
    and its own segments' starts (at most C). Label state per rank: at most
    16 ceil(N / W) + 16 C + 10 S + 16 min(C, N / W) bytes (int64, and int16
    owners). The anchors' classes come from their owners (:meth:`anchor_labels`,
    one small collective that also checks the data samples' labels on every
    rank at once).

    Communication per step (U: distinct keys this rank's batch addresses,
    B + K for shared negatives, up to B (K + 1) per sample; b: bytes per element):
    :meth:`contrast_rows` all-gathers the U requested keys with their owners
    (16 U bytes) and then every owner's rows of all ranks' requests with their
    sample indices (about (2 D b + 8) U bytes sent per rank, W times that
    received); :meth:`apply_staged` sends what the replicated bank sends (the
    batch's indices and embeddings) plus one all-reduce of 3 numbers.
    With ``scoring='anchors'`` (the default) per-sample negatives are not fetched: the
    owners score the sent anchors (:mod:`crd_mm.memory.anchor_scores`); ``'rows'`` fetches
    them as above. Shared negatives (K rows) and ``CRCDLoss`` (reads rows) always fetch.
    """

    collective_state = True  # state_dict is this rank's slice, written by every rank

    def __init__(
        self,
        num_samples: int,
        feat_dim: int,
        momentum: float,
        labels=None,
        device='cpu',
        dtype=torch.float32,
        seed: int = 0,
        scoring: str = 'anchors',
    ):
        if scoring not in SHARD_SCORING:
            raise ValueError(f'scoring must be one of {SHARD_SCORING}, got {scoring!r}')
        self.scoring = scoring
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()
        if num_samples < self.world_size:
            raise ValueError(
                f'cannot shard a bank of {num_samples} samples over {self.world_size} ranks: '
                'every rank must own at least one row; set shard_banks=False'
            )
        self.bounds = shard_bounds(num_samples, self.world_size)
        self.start, self.stop = int(self.bounds[self.rank]), int(self.bounds[self.rank + 1])
        super().__init__(
            num_samples, feat_dim, momentum, labels=labels, device=device, dtype=dtype, seed=seed
        )
        self.bounds = self.bounds.to(self.device)
        self.written = torch.zeros(self.stop - self.start, dtype=torch.bool, device=self.device)

    @classmethod
    def from_spec(cls, spec, num_samples, labels, device, dtype, seed):
        """The replicated bank's spec; ``spec['shard_scoring']`` (hook) picks the scoring."""
        return cls(
            num_samples,
            spec['feat_dim'],
            spec['momentum'],
            labels=labels,
            device=device,
            dtype=dtype,
            seed=seed,
            scoring=spec.get('shard_scoring', 'anchors'),
        )

    def _uniform_rows(self, stream: int) -> torch.Tensor:
        """This rank's slice of the replicated bank's initial rows (only its chunks drawn)."""
        return initial_rows(
            self.num_samples, self.feat_dim, stream, self.dtype, self.start, self.stop
        ).to(self.device)

    def _index_classes(self, labels: torch.Tensor):
        """The class tables of every rank and the classes of this rank's rows.

        ``labels`` (N,), on the CPU, is read here and not kept. The class-sorted
        order lists each class's samples by ascending index, so it is a run of
        segments, one per (class, owner) pair that has samples. Every rank keeps
        ``class_count`` and ``class_start`` (C each, for the draws) and each
        segment's first position and owner (``segment_start``,
        ``segment_owner``: S each, S <= min(C W, N), at most C + W - 1 when the
        dataset lists its samples class by class); this rank keeps its rows'
        classes ``local_labels`` and their class-sorted order ``local_order``
        (N / W each), and where each of its own segments starts in both orders
        (``own_segment_start``, ``own_segment_local``: at most C each).
        """
        class_count = torch.bincount(labels)
        num_classes = class_count.numel()
        samples = torch.stack(  # (C, W): class c's samples on owner o
            [
                torch.bincount(labels[low:high], minlength=num_classes)
                for low, high in zip(self.bounds[:-1].tolist(), self.bounds[1:].tolist())
            ],
            1,
        ).flatten()  # class by class, owner by owner: the segments in class order
        present = samples > 0
        sizes = samples[present]
        starts = sizes.cumsum(0) - sizes
        # an owner is a rank: 2 bytes each where they fit
        owner_dtype = torch.int16 if self.world_size <= 2**15 else torch.int32
        owners = torch.arange(self.world_size, dtype=owner_dtype).repeat(num_classes)[present]
        own = owners == self.rank
        self.class_count = class_count.to(self.device)
        self.class_start = (class_count.cumsum(0) - class_count).to(self.device)
        self.segment_start, self.segment_owner = starts.to(self.device), owners.to(self.device)
        self.own_segment_start = starts[own].to(self.device)
        self.own_segment_local = (sizes[own].cumsum(0) - sizes[own]).to(self.device)
        # a copy: a view would keep all N labels alive
        self.local_labels = labels[self.start : self.stop].clone().to(self.device)
        self.local_order = torch.argsort(self.local_labels, stable=True)

    def keys_in_class_order(self, positions: torch.Tensor) -> torch.Tensor:
        """Keys N + ``positions``: draws by class, resolved by their owners (no N-sized order)."""
        return positions + self.num_samples

    def owner(self, keys: torch.Tensor) -> torch.Tensor:
        """The rank that stores the row of each bank key (sample index, or N + class position)."""
        owners = torch.bucketize(keys, self.bounds[1:], right=True)
        by_class = keys >= self.num_samples
        if bool(by_class.any()):
            positions = keys[by_class] - self.num_samples
            segment = torch.searchsorted(self.segment_start, positions, right=True) - 1
            owners[by_class] = self.segment_owner[segment].long()
        return owners

    def local_rows(self, keys: torch.Tensor) -> torch.Tensor:
        """Positions in this rank's shard of the rows of bank ``keys`` (all owned by this rank)."""
        rows = keys - self.start
        by_class = keys >= self.num_samples
        if bool(by_class.any()):
            positions = keys[by_class] - self.num_samples
            segment = torch.searchsorted(self.own_segment_start, positions, right=True) - 1
            within = positions - self.own_segment_start[segment]
            rows[by_class] = self.local_order[self.own_segment_local[segment] + within]
        return rows

    def anchor_labels(
        self, idx: torch.Tensor, claimed: Optional[torch.Tensor] = None
    ) -> Optional[torch.Tensor]:
        """The training-set class of each batch sample ``idx``, from the ranks that own them.

        None without class-aware sampling. Otherwise collective (every rank
        calls it for its batch): the ranks all-gather their (index, claimed
        label) pairs, each owner fills in its samples' classes (one all-reduce),
        and every rank checks every rank's claims (``claimed``: the data
        samples' labels, None if they carry none), so a mismatch on any rank is
        refused on all ranks with the same error, before anything is read or written.
        """
        if self.class_count is None:
            return None
        known = claimed is not None
        pairs = torch.stack(
            [
                idx,
                claimed.to(idx) if known else torch.zeros_like(idx),
                torch.full_like(idx, int(known)),
            ],
            1,
        )
        parts = all_gather_varying(pairs.to(self.device))
        wanted = torch.cat(parts)
        samples = wanted[:, 0].contiguous()
        owned = self.owner(samples) == self.rank
        classes = torch.zeros_like(samples)
        classes[owned] = self.local_labels[self.local_rows(samples[owned])]
        dist.all_reduce(classes)
        mismatch = ((wanted[:, 2] == 1) & (wanted[:, 1] != classes)).nonzero().flatten()
        if mismatch.numel():
            i = int(mismatch[0])
            raise label_mismatch_error(int(wanted[i, 0]), int(wanted[i, 1]), int(classes[i]))
        offset = sum(part.shape[0] for part in parts[: self.rank])
        return classes[offset : offset + idx.numel()]

    # ---------------------------------------------------------------- reading
    def select(self, positive, negative, anchors=None) -> Contrast:
        """The replicated bank's selection; per-sample negatives are owner-scored (``scoring``)."""
        if negative.dim() == 2 and self.scoring == 'anchors':
            return AnchorContrast(self, positive, negative, None, self.num_samples)
        return super().select(positive, negative, anchors)

    def contrast_rows(
        self, *indices: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Tuple[torch.Tensor, ...]]:
        """The distinct rows of the bank keys ``indices``, from their owners, and indices into them.

        A sample addressed twice, by its index and by a class draw, gets one
        position, as in the replicated bank (``CRCDLoss`` recognises an anchor's
        own row by position). Collective: every rank calls it once per loss step.
        """
        flat = torch.cat([i.reshape(-1) for i in indices])
        keys, inverse = torch.unique(flat, return_inverse=True)
        student, teacher, samples = self.fetch(keys)
        distinct, by_sample = torch.unique(samples, return_inverse=True)
        first = torch.full_like(distinct, samples.numel()).scatter_reduce_(
            0, by_sample, torch.arange(samples.numel(), device=samples.device), reduce='amin'
        )
        parts = first[by_sample][inverse].split([i.numel() for i in indices])
        return student, teacher, tuple(p.view(i.shape) for p, i in zip(parts, indices))

    def fetch(self, keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Student rows, teacher rows and sample indices of bank ``keys``, from their owners.

        Collective. The ranks all-gather their keys with the keys' owners; each
        owner replies with its rows of all ranks' requests in one all-gather,
        each row's sample index appended bit for bit as row elements (8 bytes).
        """
        requests = all_gather_varying(torch.stack([keys, self.owner(keys)], 1))
        wanted, owners = torch.cat(requests).unbind(1)
        local = self.local_rows(wanted[owners == self.rank])
        sample = (local + self.start)[:, None].view(self.student.dtype)
        payload = torch.cat(
            [self.student.index_select(0, local), self.teacher.index_select(0, local), sample], 1
        )
        counts = torch.bincount(owners, minlength=self.world_size)
        padded = payload.new_zeros((int(counts.max()), payload.shape[1]))
        padded[: payload.shape[0]] = payload
        replies = dist.all_gather(padded)
        # my requests are one segment of ``wanted``; owner o's reply lists its rows in
        # ``wanted`` order
        offset = sum(r.shape[0] for r in requests[: self.rank])
        mine = owners[offset : offset + keys.numel()]
        rows = payload.new_empty((keys.numel(), payload.shape[1]))
        for o, reply in enumerate(replies):
            first = int((owners[:offset] == o).sum())
            select = mine == o
            rows[select] = reply[first : first + int(select.sum())]
        width = self.feat_dim
        return (
            rows[:, :width].contiguous(),
            rows[:, width : 2 * width].contiguous(),
            rows[:, 2 * width :].contiguous().view(torch.long).squeeze(1),
        )

    # ---------------------------------------------------------------- updates
    def apply_staged(self):
        """Gather all ranks' staged rows; each owner updates its own rows (the bank's rules)."""
        idx, rows = gathered_updates(self._staged, self.feat_dim, self.device)
        self._staged = []
        if idx.numel() == 0:
            return {}
        owned = (idx >= self.start) & (idx < self.stop)
        local, rows = idx[owned] - self.start, rows[owned]
        sums = [
            momentum_update(self.student, local, rows[:, : self.feat_dim], self.momentum)
            .double()
            .sum(),
            momentum_update(self.teacher, local, rows[:, self.feat_dim :], self.momentum)
            .double()
            .sum(),
        ]
        self.written[local] = True
        totals = torch.stack([*sums, self.written.double().sum()])
        dist.all_reduce(totals)
        return dict(
            update_norm_s=float(totals[0]) / idx.numel(),
            update_norm_t=float(totals[1]) / idx.numel(),
            coverage=float(totals[2]) / self.num_samples,
        )

    def fingerprint(self) -> torch.Tensor:
        """The replicated bank's checksum of the shards' union (one all-reduce, on every rank)."""
        sums = state_checksum([self.student, self.teacher], [self.written])
        dist.all_reduce(sums)
        return torch.cat([sums, normalizer_checksum(self.normalizers, self.device)])

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """This rank's rows and the bank's shared state, for this rank's slice file.

        Called on every rank at a scheduled save (``collective_state``): the
        hook writes each rank's state to its own file beside the checkpoint and
        rank 0's checkpoint records only where the files are, so no file and
        no process ever holds the whole banks. ``row_keys`` names the tensors
        split by rows (rank r's rows ``[start, stop)``); the rest is identical
        on every rank. On the CPU the rows are the bank's own tensors (no copy).
        """
        return dict(
            kind=self.kind,
            num_samples=self.num_samples,
            feat_dim=self.feat_dim,
            seed=self.seed,
            normalizers=None if self.normalizers is None else self.normalizers.cpu(),
            world_size=self.world_size,
            rank=self.rank,
            start=self.start,
            stop=self.stop,
            row_keys=ROW_KEYS,
            student=self.student.cpu(),
            teacher=self.teacher.cpu(),
            written=self.written.cpu(),
        )

    def load_state_dict(self, state: dict, name: str = 'memory bank'):
        """Keep this rank's rows of a checkpointed bank, of a sharded or replicated run.

        ``state`` is either a replicated bank's whole state (rows inline: the
        rows are sliced, as the checkpoint already holds them whole) or the
        slice files of a sharded run (``per_rank``: every rank's state, opened
        with ``mmap=True``), of any world size: only the rows this rank now owns
        are read, at most ``CHECKPOINT_CHUNK_ROWS`` at a time, into the shard.
        """
        if 'per_rank' not in state:
            # a copy, so that the whole loaded banks can be freed
            shard = dict(
                state,
                **{key: state[key][self.start : self.stop].clone() for key in ROW_KEYS},
            )
            super().load_state_dict(shard, name=name)
            return
        parts = sorted(state['per_rank'], key=lambda part: part['start'])
        first = parts[0]
        if first['num_samples'] != self.num_samples or first['feat_dim'] != self.feat_dim:
            super().load_state_dict(first, name=name)  # raises the bank's size error
        covered = [(part['start'], part['stop']) for part in parts]
        if (
            covered[0][0] != 0
            or covered[-1][1] != self.num_samples
            or any(a[1] != b[0] for a, b in zip(covered, covered[1:]))
        ):
            raise ValueError(
                f"the slice files of the checkpoint's {name} do not tile its "
                f'{self.num_samples} rows (they cover {covered}): some slice files are from '
                'another save; resume from a checkpoint whose slice folder is complete'
            )
        rows = self.stop - self.start
        student = torch.empty((rows, self.feat_dim), dtype=self.dtype, device=self.device)
        teacher = torch.empty_like(student)
        written = torch.empty(rows, dtype=torch.bool, device=self.device)
        for part in parts:
            low, high = max(self.start, part['start']), min(self.stop, part['stop'])
            for offset in range(low, high, CHECKPOINT_CHUNK_ROWS):
                end = min(offset + CHECKPOINT_CHUNK_ROWS, high)
                src = slice(offset - part['start'], end - part['start'])
                dst = slice(offset - self.start, end - self.start)
                student[dst] = part['student'][src].to(self.device, self.dtype)
                teacher[dst] = part['teacher'][src].to(self.device, self.dtype)
                written[dst] = part['written'][src].to(self.device)
        self.student, self.teacher, self.written = student, teacher, written
        z = first['normalizers']
        self.normalizers = None if z is None else z.to(self.device).clone()  # not the mmap
        self.seed = first['seed']
        self._staged = []
