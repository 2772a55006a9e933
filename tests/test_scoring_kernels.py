"""CRD's per-sample scoring: exact values and gradients, and a number of operators independent of B.

``contrast_scores`` with per-sample negatives scores B (K + 1) gathered bank rows. These
tests compare it with a plain float64 gather written here, and count the aten operators one
forward + backward dispatches (each one a kernel launch on a GPU) at two batch sizes.
"""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from crd_mm.models.losses.crd_loss import contrast_scores

# N * 8 > (K + 1) * D keeps these banks on the gathered path (a smaller bank is scored
# densely, all N rows at once). K + 1 = 4097 rows of D = 32 floats are 512 KiB per sample:
# more than one chunk of the float16 bank's scoring and, before this path had a constant
# number of kernels, 16 samples per gathered chunk.
N, D, K, T = 20_000, 32, 4096, 0.07


def make_inputs(batch, bank_dtype, anchor_dtype, seed=0):
    """A normalised bank, normalised anchors and (B, K + 1) indices with repeats."""
    gen = torch.Generator().manual_seed(seed)
    bank = F.normalize(torch.randn(N, D, generator=gen, dtype=torch.float64), dim=1)
    anchor = F.normalize(torch.randn(batch, D, generator=gen, dtype=torch.float64), dim=1)
    positive = torch.randint(0, N, (batch,), generator=gen)
    negative = torch.randint(0, N, (batch, K), generator=gen)
    negative[:, -1] = positive  # a row drawn twice for the same sample
    if batch > 1:
        negative[1, :8] = negative[0, :8]  # rows shared by two samples
    return bank.to(bank_dtype), anchor.to(anchor_dtype), positive, negative


def reference_scores(anchor, bank, positive, negative):
    """<bank[c], anchor> / T by a plain gather of every row, in float64."""
    contrast = torch.cat([positive[:, None], negative], 1)
    rows = bank.double()[contrast]  # (B, K + 1, D)
    return torch.einsum('bkd,bd->bk', rows, anchor.double()) / T


# (bank dtype, anchor dtype, relative and absolute tolerance; scores are at most 1 / T)
DTYPES = [
    (torch.float32, torch.float32, 2e-5),
    (torch.float64, torch.float64, 1e-12),
    (torch.float16, torch.float32, 2e-5),  # a half-precision bank, scored in float32
    (torch.float32, torch.float64, 1e-12),  # float64 anchors against a float32 bank
]


@pytest.mark.parametrize('batch', [1, 4, 64])
@pytest.mark.parametrize('bank_dtype,anchor_dtype,tol', DTYPES)
def test_scores_and_gradients_match_a_float64_gather(batch, bank_dtype, anchor_dtype, tol):
    bank, anchor, positive, negative = make_inputs(batch, bank_dtype, anchor_dtype)
    anchor.requires_grad_()
    scores = contrast_scores(anchor, bank, positive, negative, T)
    assert scores.shape == (batch, K + 1)
    assert scores.dtype == (torch.float64 if anchor_dtype == torch.float64 else torch.float32)

    anchor64 = anchor.detach().double().requires_grad_()
    expected = reference_scores(anchor64, bank, positive, negative)
    torch.testing.assert_close(scores.double(), expected.detach(), rtol=tol, atol=tol)

    upstream = torch.randn(batch, K + 1, generator=torch.Generator().manual_seed(1))
    scores.backward(upstream.to(scores.dtype))
    expected.backward(upstream.double())
    # a gradient element sums K + 1 terms of either sign: its rounding scales with the largest
    scale = float(anchor64.grad.abs().max())
    torch.testing.assert_close(anchor.grad.double(), anchor64.grad, rtol=tol, atol=tol * scale)


class CountOps(TorchDispatchMode):
    """Counts every aten operator dispatched while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def scoring_op_counts(batch, bank_dtype):
    bank, anchor, positive, negative = make_inputs(batch, bank_dtype, torch.float32)
    anchor.requires_grad_()
    with CountOps() as ops:
        contrast_scores(anchor, bank, positive, negative, T).sum().backward()
    assert anchor.grad is not None
    return ops.counts


@pytest.mark.parametrize('bank_dtype', [torch.float32, torch.float16])
def test_scoring_dispatches_as_many_operators_at_b4_as_at_b64(bank_dtype):
    small, large = scoring_op_counts(4, bank_dtype), scoring_op_counts(64, bank_dtype)
    # the counting sees the backward pass too (the gradient rows are summed there)
    assert sum(small.values()) > 2
    assert small == large, f'B=4: {sum(small.values())} ops, B=64: {sum(large.values())} ops'


def iteration_op_counts(batch):
    """Operators of one CRD training iteration: loss forward, backward, bank update."""
    from mmengine.structures import BaseDataElement

    from crd_mm.memory import ContrastMemoryBank
    from crd_mm.models.losses import CRDLoss

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (N,), generator=gen)
    bank = ContrastMemoryBank(N, D, 0.5, labels=labels)
    loss = CRDLoss(num_negatives=K, feat_dim=D)
    loss.attach_memory_bank(bank)

    def batch_inputs(seed):
        # as mmengine's datasets and mmpretrain's PackInputs set them: an int, a (1,) label
        idx = torch.randint(0, N, (batch,), generator=torch.Generator().manual_seed(seed))
        samples = [BaseDataElement(sample_idx=i, gt_label=labels[i : i + 1]) for i in idx.tolist()]
        embeds = [F.normalize(torch.randn(batch, D), dim=1).requires_grad_() for _ in range(2)]
        return embeds, samples

    def iteration(inputs):
        (e_s, e_t), samples = inputs
        loss(e_s, e_t, samples).backward()
        bank.apply_staged()
        assert e_s.grad is not None and e_t.grad is not None

    batches = [batch_inputs(seed) for seed in range(3)]  # made outside the counted regions
    iteration(batches[0])  # the first iteration also sets the normalisation constants
    with CountOps() as ops:
        iteration(batches[1])
    # the profiler also records operators that return their input (no kernel, but a call);
    # counted: the operators called, not those a CPU kernel calls inside (some only above
    # a size, to split the work between threads)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        iteration(batches[2])
    return ops.counts, Counter(e.name for e in called_aten_ops(prof.events()))


def called_aten_ops(events):
    """The profiler's aten events that no other aten operator called."""

    def nested(event):
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith('aten::'):
                return True
            parent = parent.cpu_parent
        return False

    return [e for e in events if e.name.startswith('aten::') and not nested(e)]


def test_a_crd_training_iteration_calls_as_many_operators_at_b4_as_at_b64():
    (small, small_profiled), (large, large_profiled) = (
        iteration_op_counts(4),
        iteration_op_counts(64),
    )
    assert small == large, f'B=4: {sum(small.values())} ops, B=64: {sum(large.values())} ops'
    assert small_profiled == large_profiled, (
        f'torch.profiler: B=4: {sum(small_profiled.values())} aten ops, '
        f'B=64: {sum(large_profiled.values())}'
    )
