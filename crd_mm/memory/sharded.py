"""ShardedMemoryBank: CRD's banks split across ranks, 1/W of every bank's rows on each of W ranks.

Rank r owns the contiguous rows ``[r N / W, (r + 1) N / W)`` of both banks and of the
written mask, so bank memory per rank is N x D x bytes x 2 / W. Sampling is the
replicated bank's (the same generator streams, over the whole dataset); the rows a
rank needs are fetched from their owners, and each owner applies the momentum update
to its own rows. Collectives are mmengine's ``all_gather``/``all_reduce`` only
(gloo has no all-to-all).
"""

from typing import Tuple

import torch
from mmengine import dist

from .anchor_scores import SHARD_SCORING, AnchorContrast
from .bank import (
    Contrast,
    ContrastMemoryBank,
    all_gather_varying,
    gathered_updates,
    initial_rows,
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
    ``student``/``teacher``/``written`` hold this rank's shard only; the labels
    and their class-sorted order (class-aware sampling, 16 bytes per sample)
    stay whole on every rank, as the sampler draws over the whole dataset.

    Communication per step (U: distinct rows this rank's batch addresses,
    B + K for shared negatives, up to B (K + 1) per sample; b: bytes per element):
    :meth:`contrast_rows` all-gathers the U requested indices (8 U bytes) and then
    every owner's rows of all ranks' requests (about 2 D b U bytes sent per rank,
    W times that received); :meth:`apply_staged` sends what the replicated bank
    sends (the batch's indices and embeddings) plus one all-reduce of 3 numbers.
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

    def owner(self, idx: torch.Tensor) -> torch.Tensor:
        """The rank that stores each of the bank rows ``idx``."""
        return torch.bucketize(idx, self.bounds[1:], right=True)

    def local_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Positions in this rank's shard of the rows ``idx`` (all owned by this rank)."""
        return idx - self.start

    # ---------------------------------------------------------------- reading
    def select(self, positive, negative, anchors=None) -> Contrast:
        """The replicated bank's selection; per-sample negatives are owner-scored (``scoring``)."""
        if negative.dim() == 2 and self.scoring == 'anchors':
            return AnchorContrast(self, positive, negative, None, self.num_samples)
        return super().select(positive, negative, anchors)

    def contrast_rows(
        self, *indices: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Tuple[torch.Tensor, ...]]:
        """The distinct rows ``indices`` address, fetched from their owners, and indices into them.

        Collective: every rank calls it once per loss step.
        """
        flat = torch.cat([i.reshape(-1) for i in indices])
        unique, inverse = torch.unique(flat, return_inverse=True)
        student, teacher = self.fetch(unique)
        parts = inverse.split([i.numel() for i in indices])
        return student, teacher, tuple(p.view(i.shape) for p, i in zip(parts, indices))

    def fetch(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher rows ``idx`` (whole-bank indices) from their owners. Collective."""
        requests = all_gather_varying(idx)
        wanted = torch.cat(requests)
        owners = self.owner(wanted)
        local = self.local_rows(wanted[owners == self.rank])
        payload = torch.cat(
            [self.student.index_select(0, local), self.teacher.index_select(0, local)], 1
        )
        counts = torch.bincount(owners, minlength=self.world_size)
        padded = payload.new_zeros((int(counts.max()), payload.shape[1]))
        padded[: payload.shape[0]] = payload
        replies = dist.all_gather(padded)
        # my requests are one segment of ``wanted``; owner o's reply lists its rows in
        # ``wanted`` order
        offset = sum(r.numel() for r in requests[: self.rank])
        mine = owners[offset : offset + idx.numel()]
        rows = payload.new_empty((idx.numel(), payload.shape[1]))
        for o, reply in enumerate(replies):
            first = int((owners[:offset] == o).sum())
            select = mine == o
            rows[select] = reply[first : first + int(select.sum())]
        return rows[:, : self.feat_dim].contiguous(), rows[:, self.feat_dim :].contiguous()

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
