"""Sharded banks with per-sample negatives: anchor sending vs row fetching, in one run.

W fresh gloo processes (one thread each) build one ``ShardedMemoryBank`` of N rows per
scale (ImageNet: N = 1,281,167, float32; Glint360K: N = 17,091,657, float16; D = 128) and
run crd_mm's ``CRDLoss`` with K per-sample uniform negatives on random L2-normalised
embeddings, B per rank: forward + backward + the hook's cross-rank bank update. The same
processes and bank time the two scorings of ``CRDMemoryBankHook(shard_scoring=...)``,
'anchors' first, then 'rows' (one warm-up step each), and report per rank:

* the bank's own tensors (shard rows and written mask), and the replicated bank's
  N x D x bytes x 2 + N for comparison (formula);
* peak resident memory while each scoring ran (``VmHWM``, reset between them);
* bytes handed to ``all_gather``/``all_reduce`` per step (sent) and bytes of other ranks'
  tensors they return (received: (W - 1) x the size for an all-gather, the size for an
  all-reduce);
* the median step time over ``--steps`` steps (each step's time is the slowest rank's).

    python tools/benchmark/crd_shard_traffic.py --world 8 --batch 4 --steps 3
"""

import argparse
import os
import platform
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crd_bank_benchmark import write_report  # noqa: E402

SCALES = dict(imagenet=1_281_167, glint360k=17_091_657)
DTYPES = dict(imagenet='float32', glint360k='float16')
FEAT_DIM = 128
SCORINGS = ('anchors', 'rows')


def peak_rss() -> int:
    """This process's peak resident memory (bytes) since start or the last reset."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM'))


def reset_peak_rss():
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def worker(rank, world, port, num_samples, dtype_name, batch, num_negatives, steps, queue):
    import torch
    import torch.distributed as torch_dist
    import torch.nn.functional as F
    from mmengine import dist
    from mmengine.structures import BaseDataElement

    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world
    )
    from crd_mm.memory import ShardedMemoryBank
    from crd_mm.models.losses import CRDLoss

    traffic = dict(sent=0, received=0)

    def counted(name, others):
        original = getattr(dist, name)

        def call(data, *args, **kwargs):
            size = data.numel() * data.element_size()
            traffic['sent'] += size
            traffic['received'] += others * size
            return original(data, *args, **kwargs)

        return call

    dist.all_gather = counted('all_gather', world - 1)
    dist.all_reduce = counted('all_reduce', 1)

    start = time.perf_counter()
    bank = ShardedMemoryBank(num_samples, FEAT_DIM, 0.5, dtype=getattr(torch, dtype_name))
    build_s = time.perf_counter() - start
    loss = CRDLoss(num_negatives=num_negatives, feat_dim=FEAT_DIM, negative_sampling='uniform')
    loss.attach_memory_bank(bank)
    bank_bytes = sum(t.untyped_storage().nbytes() for t in (bank.student, bank.teacher))
    bank_bytes += bank.written.untyped_storage().nbytes()
    generator = torch.Generator().manual_seed(rank)

    def step(i):
        bank.reseed(i)
        idx = torch.randint(0, num_samples, (batch,), generator=generator)
        e_s = F.normalize(torch.randn(batch, FEAT_DIM, generator=generator), dim=1)
        e_t = F.normalize(torch.randn(batch, FEAT_DIM, generator=generator), dim=1)
        samples = [BaseDataElement(sample_idx=int(j)) for j in idx]
        loss(e_s.requires_grad_(), e_t.requires_grad_(), samples).backward()
        bank.apply_staged()

    results = dict(rank=rank, build_s=build_s, bank_bytes=bank_bytes)
    iteration = 0
    for scoring in SCORINGS:
        bank.scoring = scoring
        step(iteration)  # warm-up (the first one also sets Z)
        iteration += 1
        torch_dist.barrier()
        reset_peak_rss()
        traffic.update(sent=0, received=0)
        times = []
        for _ in range(steps):
            torch_dist.barrier()
            begin = time.perf_counter()
            step(iteration)
            iteration += 1
            elapsed = torch.tensor([time.perf_counter() - begin])
            torch_dist.all_reduce(elapsed, op=torch_dist.ReduceOp.MAX)  # not counted
            times.append(float(elapsed))
        results[scoring] = dict(
            step_s=statistics.median(times),
            sent=traffic['sent'] / steps,
            received=traffic['received'] / steps,
            peak_rss=peak_rss(),
        )
    queue.put(results)
    torch_dist.barrier()
    torch_dist.destroy_process_group()


def run_scale(scale, world, batch, num_negatives, steps):
    """W processes of one scale; the per-rank results in rank order."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    args = (SCALES[scale], DTYPES[scale], batch, num_negatives, steps, queue)
    procs = [ctx.Process(target=worker, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f'{scale} W={world}: a worker exited with {p.exitcode}')
    return sorted(results, key=lambda r: r['rank'])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scales', nargs='+', default=list(SCALES), choices=list(SCALES))
    parser.add_argument('--world', type=int, default=8)
    parser.add_argument('--batch', type=int, default=4, help='samples per rank per step')
    parser.add_argument('--num-negatives', type=int, default=16384)
    parser.add_argument('--steps', type=int, default=3, help='timed steps per scoring')
    parser.add_argument('--out', help='write the Markdown report here')
    args = parser.parse_args()

    lines = [
        f'Machine: {platform.machine()}, {os.cpu_count()} cores, no GPU; gloo, '
        f'{args.world} processes, one thread each; D={FEAT_DIM}, K={args.num_negatives} '
        f'per-sample uniform negatives, B={args.batch} per rank; per scoring one warm-up '
        f'and {args.steps} timed steps (median; each step the slowest rank); step = forward + '
        'backward + cross-rank bank update.',
        '',
        '| N | dtype | W | scoring | bank per rank (MB) | replicated bank per rank (MB, '
        'formula) | peak RSS per rank (MB) | sent per rank per step (MB) | received per rank '
        'per step (MB) | step (s) |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for scale in args.scales:
        ranks = run_scale(scale, args.world, args.batch, args.num_negatives, args.steps)
        element = 2 if DTYPES[scale] == 'float16' else 4
        replicated = SCALES[scale] * (FEAT_DIM * element * 2 + 1)
        for scoring in SCORINGS:
            per_rank = [r[scoring] for r in ranks]
            lines.append(
                f'| {SCALES[scale]:,} | {DTYPES[scale]} | {args.world} | {scoring} | '
                f'{max(r["bank_bytes"] for r in ranks) / 2**20:,.0f} | '
                f'{replicated / 2**20:,.0f} | '
                f'{max(r["peak_rss"] for r in per_rank) / 2**20:,.0f} | '
                f'{max(r["sent"] for r in per_rank) / 1e6:,.2f} | '
                f'{max(r["received"] for r in per_rank) / 1e6:,.2f} | '
                f'{per_rank[0]["step_s"]:.3f} |'
            )
        print(f'{scale}: {ranks}', file=sys.stderr)
    write_report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
