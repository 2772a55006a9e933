"""Count the operators of one CRD training iteration at two batch sizes.

One iteration is what a training step asks of CRD: ``CRDLoss`` forward (sampling per-sample
class-exact negatives, scoring both banks), backward, and the bank update
(``apply_staged``). On a GPU each dispatched operator is at least one kernel launch, so a
count that grows with B is launch overhead that grows with B. Two counts per batch size:

* ``torch.profiler``: the ``aten::`` operators called (those no other aten operator called),
  and every ``aten::`` event it records (nested calls included: some CPU kernels split their
  work between threads above a size, with a few more operators);
* dispatched: the operators that reach the kernels (counted by a ``TorchDispatchMode``,
  below autograd, composite operators already decomposed).

Each count follows one warm-up iteration (the first one also sets the normalisation
constants). The bank holds ``--num-samples`` rows (ImageNet's 1,281,167 by default; it must
exceed (K + 1) D / 8 rows, or CRD scores all N rows with one matrix product instead).
Prints a Markdown table:

    python tools/benchmark/crd_operator_count.py
"""

import argparse
import os
import platform
from collections import Counter

import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

import crd_mm  # noqa: F401
from crd_mm.memory import ContrastMemoryBank
from crd_mm.models.losses import CRDLoss


class CountDispatched(TorchDispatchMode):
    """Counts the aten operators dispatched while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def make_batch(batch, labels, feat_dim, seed):
    """Embeddings and data samples as a training step gets them (outside the counted region).

    As mmengine's datasets and mmpretrain's ``PackInputs`` set them: ``sample_idx`` a Python
    int, ``gt_label`` a (1,) tensor.
    """
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, labels.numel(), (batch,), generator=gen)
    e_s = F.normalize(torch.randn(batch, feat_dim, generator=gen), dim=1).requires_grad_()
    e_t = F.normalize(torch.randn(batch, feat_dim, generator=gen), dim=1).requires_grad_()
    samples = [
        BaseDataElement(sample_idx=int(i), gt_label=labels[i].reshape(1)) for i in idx.tolist()
    ]
    return e_s, e_t, samples


def iteration(loss, bank, inputs, seed):
    """One training iteration of the loss: forward, backward, bank update."""
    e_s, e_t, samples = inputs
    bank.reseed(seed)
    loss(e_s, e_t, samples).backward()
    bank.apply_staged()


def count(batch, args):
    """(aten operators called, all aten events, dispatched operators) of one iteration."""
    torch.manual_seed(0)
    labels = torch.randint(0, args.classes, (args.num_samples,))
    bank = ContrastMemoryBank(args.num_samples, args.feat_dim, 0.5, labels=labels)
    loss = CRDLoss(num_negatives=args.num_negatives, feat_dim=args.feat_dim)
    loss.attach_memory_bank(bank)
    batches = [make_batch(batch, labels, args.feat_dim, seed) for seed in range(3)]
    iteration(loss, bank, batches[0], 0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        iteration(loss, bank, batches[1], 1)
    events = [event for event in prof.events() if event.name.startswith('aten::')]
    called = [event for event in events if not nested_in_aten(event)]
    with CountDispatched() as dispatched:
        iteration(loss, bank, batches[2], 2)
    return len(called), len(events), sum(dispatched.counts.values())


def nested_in_aten(event):
    """Whether another aten operator called this profiler event."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith('aten::'):
            return True
        parent = parent.cpu_parent
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batches', type=int, nargs='+', default=[4, 64])
    parser.add_argument('--num-samples', type=int, default=1_281_167)
    parser.add_argument('--classes', type=int, default=1000)
    parser.add_argument('--num-negatives', type=int, default=16384)
    parser.add_argument('--feat-dim', type=int, default=128)
    args = parser.parse_args()
    if 8 * args.num_samples <= (args.num_negatives + 1) * args.feat_dim:
        parser.error(
            f'--num-samples {args.num_samples} is small enough for dense scoring (all N rows at '
            f'once); use more than {(args.num_negatives + 1) * args.feat_dim // 8} to count '
            'the gathered path'
        )
    rows = [(b, *count(b, args)) for b in args.batches]
    print(
        f'Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'torch {torch.__version__}, CPU; N={args.num_samples}, K={args.num_negatives}, '
        f'D={args.feat_dim}, class-exact per-sample negatives; one iteration = CRDLoss '
        'forward + backward + bank update, after one warm-up.\n'
    )
    print(
        '| B | aten ops called (torch.profiler) | aten events, nested included (torch.profiler) '
        '| dispatched ops (TorchDispatchMode) |'
    )
    print('|---|---|---|---|')
    for b, called, events, dispatched in rows:
        print(f'| {b} | {called:,} | {events:,} | {dispatched:,} |')


if __name__ == '__main__':
    main()
