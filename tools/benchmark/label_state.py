"""Bytes of class-label state one rank keeps for class-aware CRD sampling, measured.

Builds the class tables a :class:`~crd_mm.memory.ShardedMemoryBank` of rank 0 of W keeps
(without its rows, and without a process group: the tables only need the shard bounds)
and the labels and class order a replicated bank keeps (as a sharded bank kept them
before), from synthetic labels of N samples in C classes (sizes drawn at random, every
class present), listed in a random order and class by class (as image-folder datasets
list them), and prints the bytes of every tensor next to the formulas of
docs/memory.md. Default sizes are Glint360K's.

    python tools/benchmark/label_state.py [--samples N] [--classes C] [--world-size W]
        [--lookup-keys M]
"""

import argparse
import time

import torch

from crd_mm.memory import ShardedMemoryBank
from crd_mm.memory.bank import checked_labels
from crd_mm.memory.sharded import shard_bounds

GLINT360K_SAMPLES, GLINT360K_CLASSES = 17_091_657, 360_232
SHARDED_TABLES = (
    'class_count',
    'class_start',
    'segment_start',
    'segment_owner',
    'own_segment_start',
    'own_segment_local',
    'local_labels',
    'local_order',
)


def synthetic_labels(num_samples: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Every class at least once, the rest at random, shuffled."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat(
        [
            torch.arange(num_classes),
            torch.randint(0, num_classes, (num_samples - num_classes,), generator=generator),
        ]
    )
    return labels[torch.randperm(num_samples, generator=generator)]


def rank_bank(labels: torch.Tensor, world_size: int, rank: int) -> ShardedMemoryBank:
    """A sharded bank's rank with its label tables (built by the bank's own code), no rows."""
    bank = ShardedMemoryBank.__new__(ShardedMemoryBank)
    bank.num_samples, bank.device = labels.numel(), torch.device('cpu')
    bank.bounds, bank.world_size, bank.rank = (
        shard_bounds(labels.numel(), world_size),
        world_size,
        rank,
    )
    bank.start, bank.stop = int(bank.bounds[rank]), int(bank.bounds[rank + 1])
    bank._index_classes(labels)
    return bank


def lookup_seconds(bank: ShardedMemoryBank, num_keys: int) -> dict:
    """Seconds of owner() on ``num_keys`` sample keys and on as many class-draw keys.

    And of local_rows() on the class keys this rank owns: what a step's owners do for
    the requested keys of all ranks (W B (K + 1) with per-sample negatives).
    """
    generator = torch.Generator().manual_seed(1)
    n = bank.num_samples
    samples = torch.randint(0, n, (num_keys,), generator=generator)
    by_class = torch.randint(n, 2 * n, (num_keys,), generator=generator)
    seconds = {}
    for name, call in (
        ('owner(sample keys)', lambda: bank.owner(samples)),
        ('owner(class keys)', lambda: bank.owner(by_class)),
    ):
        start = time.perf_counter()
        owners = call()
        seconds[name] = time.perf_counter() - start
    owned = by_class[owners == bank.rank]
    start = time.perf_counter()
    bank.local_rows(owned)
    seconds[f'local_rows({owned.numel():,d} owned class keys)'] = time.perf_counter() - start
    return seconds


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--samples', type=int, default=GLINT360K_SAMPLES)
    parser.add_argument('--classes', type=int, default=GLINT360K_CLASSES)
    parser.add_argument('--world-size', type=int, default=8)
    parser.add_argument(
        '--lookup-keys',
        type=int,
        default=0,
        help='also time owner() and local_rows() on this many keys (0: no timing)',
    )
    args = parser.parse_args()
    n, c, w = args.samples, args.classes, args.world_size
    labels = checked_labels(synthetic_labels(n, c), n)
    for listing, listed in (('random order', labels), ('class by class', labels.sort().values)):
        bank = rank_bank(listed, w, 0)
        tables = {name: getattr(bank, name) for name in SHARDED_TABLES}
        sharded = sum(nbytes(t) for t in tables.values())
        segments = tables['segment_start'].numel()
        print(f'{listing}: sharded rank 0 of {w}')
        for name, tensor in tables.items():
            print(f'  {name:18s} {tuple(tensor.shape)!s:>14s} {nbytes(tensor):>13,d} B')
        bound = 16 * (-(-n // w) + c + min(c, -(-n // w))) + 10 * segments
        print(
            f'  total {sharded:,d} B (S = {segments:,d} segments); at most '
            f'16 ceil(N/W) + 16 C + 10 S + 16 min(C, N/W) = {bound:,d} B'
        )
        if args.lookup_keys:
            for name, seconds in lookup_seconds(bank, args.lookup_keys).items():
                print(f'  {name}: {seconds:.3f} s')

    order = torch.argsort(labels, stable=True)
    class_count = torch.bincount(labels)
    before = nbytes(labels) + nbytes(order) + 2 * nbytes(class_count)
    print(
        f'before (labels, order, class count and start on every rank) {before:,d} B; formula '
        f'16 N + 16 C = {16 * n + 16 * c:,d} B'
    )
    print(f'N={n:,d} C={c:,d} W={w}')


if __name__ == '__main__':
    main()
