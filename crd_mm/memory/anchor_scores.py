"""Anchor sending: per-sample negatives of a sharded bank scored by the ranks that own the rows.

Row fetching (:meth:`~crd_mm.memory.ShardedMemoryBank.fetch`) brings the up to B (K + 1)
rows a batch addresses to the rank that scores them: B (K + 1) x 2 x D x bytes per rank and
step. Anchor sending moves the anchors instead. In forward every rank all-gathers its B
student and teacher anchors with its B (K + 1) requested keys; each owner scores all ranks'
anchors against its own requested rows, student anchors against its teacher rows and teacher
anchors against its student rows, and all-gathers those scores, from which every rank takes
its own (B, K + 1) pair. In backward every rank all-gathers dL/dscore, each owner sums
dL/dscore x row into a partial gradient of all ranks' anchors, and one all-reduce adds the
owners' partials. Bank rows carry no gradient, so this is exact.

Bytes each rank hands to the collectives per step (b: bytes per computed element, 4 in
float32; k: bytes per key, 4 while every key is below 2^31, else 8; E: the largest number of
requested entries one owner holds, about B (K + 1)):

* forward: B x 2 D x b of anchors, B (K + 1) x k of keys, 32 bytes of header, E x 2 x b of
  scores;
* backward: B (K + 1) x 2 x b of dL/dscore and W B x 2 D x b of partial anchor gradients.

At D = 128 in float32 about 20 bytes per requested entry (plus 2 D x b x (W + 1) per anchor)
where row fetching sends 8 + 2 D x bytes (520 in float16). Every step runs a number of
operators that does not depend on B: the scores are the gathered-dot kernel of
``GatheredRowScores`` run on the owner's shard.
"""

from typing import NamedTuple, Optional, Tuple

import torch
from mmengine import dist
from torch import nn

# how a ShardedMemoryBank scores per-sample negatives: owners score sent anchors, or rows are
# fetched to the anchors' rank
SHARD_SCORING = ('anchors', 'rows')

# embedding_bag's gradient with respect to per_sample_weights: one dot product per index,
# <anchor[bag], row[index]>, each row read in place (GatheredRowScores uses it too)
GATHERED_DOTS = torch.ops.aten._embedding_bag_per_sample_weights_backward
EMBEDDING_BAG_SUM = 0  # aten's mode number for mode='sum'
# rows converted per anchor per chunk when the shard is stored in lower precision, as
# GatheredRowScores.SAMPLE_CHUNK_BYTES: a fixed number of chunks whatever B
SAMPLE_CHUNK_BYTES = 1 << 18


def _chunks(num_entries: int, num_anchors: int, world_size: int, row_bytes: int):
    """Entry slices of converted rows: about SAMPLE_CHUNK_BYTES per anchor of an average rank."""
    width = max(1, SAMPLE_CHUNK_BYTES // row_bytes) * max(1, -(-num_anchors // world_size))
    return [slice(start, start + width) for start in range(0, num_entries, width)]


def owner_dots(
    anchors: torch.Tensor,
    shard: torch.Tensor,
    local: torch.Tensor,
    bag: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    """<anchors[bag[j]], shard[local[j]]> for every owned entry j, in the anchors' dtype."""
    if shard.dtype == anchors.dtype:
        return GATHERED_DOTS(anchors, shard, local, offsets, bag, EMBEDDING_BAG_SUM)
    dots = anchors.new_empty(local.numel())
    row_bytes = shard.shape[1] * anchors.element_size()
    for part in _chunks(local.numel(), anchors.shape[0], dist.get_world_size(), row_bytes):
        rows = shard.index_select(0, local[part]).to(anchors.dtype)
        positions = torch.arange(rows.shape[0], device=rows.device)
        dots[part] = GATHERED_DOTS(
            anchors, rows, positions, offsets, bag[part].contiguous(), EMBEDDING_BAG_SUM
        )
    return dots


def owner_bag_sums(
    grad: torch.Tensor,
    shard: torch.Tensor,
    local: torch.Tensor,
    bag: torch.Tensor,
    offsets: torch.Tensor,
    num_anchors: int,
) -> torch.Tensor:
    """sum_j grad[j] shard[local[j]] over the owned entries j of each anchor, (A, D)."""
    if shard.dtype == grad.dtype:
        if local.numel() == 0:
            return grad.new_zeros(num_anchors, shard.shape[1])
        return nn.functional.embedding_bag(
            local, shard, offsets, mode='sum', per_sample_weights=grad
        )
    sums = grad.new_zeros(num_anchors, shard.shape[1])
    row_bytes = shard.shape[1] * grad.element_size()
    for part in _chunks(local.numel(), num_anchors, dist.get_world_size(), row_bytes):
        rows = shard.index_select(0, local[part]).to(grad.dtype)
        sums.index_add_(0, bag[part], rows.mul_(grad[part, None]))
    return sums


def _gather_padded(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Every rank's ``tensor`` padded to ``rows`` rows, stacked (W, rows, ...). Collective."""
    padded = tensor.new_zeros((max(rows, 1), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    return torch.stack(dist.all_gather(padded))


class OwnerScores(torch.autograd.Function):
    """(B, K + 1) scores of this rank's anchors, computed by the ranks that own the rows.

    ``forward(student_anchor, teacher_anchor, bank, contrast, needs_grad)``: ``contrast``
    (B, K + 1) holds the requested keys (positive first); ``needs_grad`` says whether this
    rank will run backward (all ranks must agree; checked). Returns <teacher row, student
    anchor> and <student row, teacher anchor>, unscaled, in the anchors' dtype. Collective in
    forward and in backward: every rank calls it once per step.
    """

    @staticmethod
    def forward(ctx, student_anchor, teacher_anchor, bank, contrast, needs_grad):
        rank, world = dist.get_rank(), dist.get_world_size()
        dtype, dim = student_anchor.dtype, student_anchor.shape[1]
        batch, columns = contrast.shape
        header = torch.tensor(
            [batch, columns, int(contrast.max()) if contrast.numel() else 0, int(needs_grad)],
            device=contrast.device,
        )
        headers = torch.stack(dist.all_gather(header)).cpu()
        if headers[:, 3].min() != headers[:, 3].max():  # every rank sees the same headers
            with_grad = headers[:, 3].nonzero().flatten().tolist()
            raise RuntimeError(
                f'sharded CRD scoring: ranks {with_grad} of {world} compute the loss with '
                'gradients and the others without; anchor sending exchanges gradients with '
                'every rank in backward, so every rank must run the same step (or set '
                "CRDMemoryBankHook(shard_scoring='rows'))"
            )
        key_dtype = torch.int32 if int(headers[:, 2].max()) < 2**31 else torch.int64
        batches, counts = headers[:, 0].tolist(), (headers[:, 0] * headers[:, 1]).tolist()
        key_bytes, anchor_row_bytes = key_dtype.itemsize, 2 * dim * dtype.itemsize
        # one byte buffer per rank: its anchors [student | teacher], then its keys (an anchor
        # block is a whole number of 8-byte words, so the keys start aligned)
        payload = torch.cat(
            [
                torch.cat([student_anchor, teacher_anchor], 1)
                .contiguous()
                .view(-1)
                .view(torch.uint8),
                contrast.to(key_dtype).reshape(-1).view(torch.uint8),
            ]
        )
        sizes = [b * anchor_row_bytes + n * key_bytes for b, n in zip(batches, counts)]
        parts = _gather_padded(payload, -(-max(sizes) // 8) * 8)  # each rank's bytes 8-aligned
        anchors = torch.cat(
            [p[: b * anchor_row_bytes].view(dtype).view(b, 2 * dim) for p, b in zip(parts, batches)]
        )
        wanted = torch.cat(
            [
                p[b * anchor_row_bytes : size].view(key_dtype)
                for p, b, size in zip(parts, batches, sizes)
            ]
        ).long()
        entry_start = [0, *torch.tensor(counts).cumsum(0).tolist()]
        anchor_start = torch.tensor([0, *batches], device=wanted.device).cumsum(0)

        # the owner's side: this rank's rows among every rank's requests
        owners = bank.owner(wanted)
        positions = (owners == rank).nonzero().squeeze(1)
        bounds = torch.tensor(entry_start, device=wanted.device)
        source = torch.bucketize(positions, bounds[1:], right=True)  # the requesting rank
        within = positions - bounds[source]
        bag = anchor_start[source] + within // headers[:, 1].to(wanted.device)[source]
        local = bank.local_rows(wanted[positions])
        num_anchors = int(anchor_start[-1])
        offsets = torch.searchsorted(bag, torch.arange(num_anchors, device=bag.device))
        student_anchors, teacher_anchors = anchors[:, :dim], anchors[:, dim:]
        reply = torch.stack(
            [
                owner_dots(student_anchors.contiguous(), bank.teacher, local, bag, offsets),
                owner_dots(teacher_anchors.contiguous(), bank.student, local, bag, offsets),
            ],
            1,
        )
        held = torch.bincount(owners, minlength=world)  # requested entries each owner holds
        replies = _gather_padded(reply, int(held.max())).flatten(0, 1)

        # this rank's entries: owner o's reply lists them after those of lower ranks
        mine = owners[entry_start[rank] : entry_start[rank + 1]]
        earlier = torch.bincount(owners[: entry_start[rank]], minlength=world)
        order = torch.argsort(mine, stable=True)
        per_owner = torch.bincount(mine, minlength=world)
        rank_in_owner = torch.empty_like(mine)
        rank_in_owner[order] = (
            torch.arange(mine.numel(), device=mine.device)
            - (per_owner.cumsum(0) - per_owner)[mine[order]]
        )
        slot = mine * max(int(held.max()), 1) + earlier[mine] + rank_in_owner
        scores = replies[slot].view(batch, columns, 2)

        ctx.save_for_backward(bank.student, bank.teacher, local, bag, offsets)
        ctx.owned_slot = source * max(max(counts), 1) + within
        ctx.layout = (rank, dim, num_anchors, max(counts), anchor_start.tolist())
        return scores[..., 0].contiguous(), scores[..., 1].contiguous()

    @staticmethod
    def backward(ctx, grad_student, grad_teacher):
        student_rows, teacher_rows, local, bag, offsets = ctx.saved_tensors
        rank, dim, num_anchors, most, anchor_start = ctx.layout
        grads = torch.stack([grad_student, grad_teacher], -1).reshape(-1, 2)
        owned = _gather_padded(grads, most).flatten(0, 1)[ctx.owned_slot]
        partial = torch.cat(
            [
                owner_bag_sums(owned[:, 0], teacher_rows, local, bag, offsets, num_anchors),
                owner_bag_sums(owned[:, 1], student_rows, local, bag, offsets, num_anchors),
            ],
            1,
        )
        dist.all_reduce(partial)  # every owner's part of every rank's anchor gradients
        mine = partial[anchor_start[rank] : anchor_start[rank + 1]]
        grad_s = mine[:, :dim] if ctx.needs_input_grad[0] else None
        grad_t = mine[:, dim:] if ctx.needs_input_grad[1] else None
        return grad_s, grad_t, None, None, None


class AnchorContrast(NamedTuple):
    """What a sharded bank selects for per-sample negatives when owners score sent anchors.

    Stands where a :class:`~crd_mm.memory.bank.Contrast` does, without rows: the loss asks
    :meth:`scores` for the (B, K + 1) scores of its anchors.
    """

    bank: 'object'  # the ShardedMemoryBank holding the rows
    positive: torch.Tensor
    negative: torch.Tensor
    valid: Optional[torch.Tensor]
    noise_size: int

    def scores(
        self, student_anchor: torch.Tensor, teacher_anchor: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """<teacher row, student anchor> and <student row, teacher anchor>, (B, K + 1) each.

        Unscaled, in the anchors' (common) dtype; column 0 is the positive. Collective.
        """
        dtype = torch.promote_types(student_anchor.dtype, teacher_anchor.dtype)
        contrast = torch.cat([self.positive[:, None], self.negative], 1)
        needs_grad = torch.is_grad_enabled() and (
            student_anchor.requires_grad or teacher_anchor.requires_grad
        )
        return OwnerScores.apply(
            student_anchor.to(dtype), teacher_anchor.to(dtype), self.bank, contrast, needs_grad
        )
