"""CRD memories at ImageNet and Glint360K scale, in W gloo processes.

Replicated banks vs sharded banks vs a queue.

For each dataset size N, world size W and memory (``replicated``:
``ContrastMemoryBank``; ``sharded``: ``ShardedMemoryBank``, as
``CRDMemoryBankHook(shard_banks=True)`` builds; ``queue``: ``ContrastQueue``, as
``CRDLoss(memory='queue')``), W fresh processes join a gloo group and run
crd_mm's ``CRDLoss`` (forward + backward + the hook's cross-rank update) on
random L2-normalised embeddings, B per rank, and report per rank:

* the memory's own tensors (bank rows or shard, written mask, queue) and the
  process's peak resident memory (``VmHWM``),
* seconds per step (the slowest rank; after one warm-up step),
* bytes this rank hands to collectives per step (the tensors it passes to
  mmengine's ``all_gather``/``all_reduce``; a ring implementation forwards
  (W - 1) / W of the gathered total on top).

A case whose W processes would exceed ``--max-total-gb`` by the formula (per
process: the banks, N x D x bytes x 2 replicated or / W sharded, plus about
1 GB for torch and the OpenMMLab imports) is not started; the table shows the
formula's figure instead (the machine is shared: never crash it).

    python tools/benchmark/crd_scale_benchmark.py --steps 3 --out docs/benchmarks/crd_scale_cpu.md
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crd_bank_benchmark import write_report  # noqa: E402

SCALES = dict(imagenet=1_281_167, glint360k=17_091_657)
MEMORIES = ('replicated', 'sharded', 'queue')
FEAT_DIM, NUM_NEGATIVES, QUEUE_SIZE = 128, 16384, 16384
PROCESS_OVERHEAD = (
    2**30
)  # resident memory of one process before its memory is built (measured: 0.9-1.1 GB)


def bank_bytes(memory, num_samples, world, element_size):
    """Bytes of both banks (or the queue) per rank: N x D x bytes x 2 (/ W if sharded)."""
    rows = {'replicated': num_samples, 'sharded': -(-num_samples // world), 'queue': QUEUE_SIZE}[
        memory
    ]
    return rows * FEAT_DIM * element_size * 2


def peak_rss():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM'))


def worker(
    rank, world, port, memory_kind, num_samples, dtype_name, batch, steps, per_sample, queue
):
    import torch
    import torch.distributed as torch_dist
    import torch.nn.functional as F
    from mmengine import dist
    from mmengine.structures import BaseDataElement

    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world
    )
    from crd_mm.memory import ContrastMemoryBank, ContrastQueue, ShardedMemoryBank
    from crd_mm.models.losses import CRDLoss

    sent = [0]

    def counted(name):
        original = getattr(dist, name)

        def call(data, *args, **kwargs):
            if world > 1:  # with one process mmengine's collectives send nothing
                sent[0] += data.numel() * data.element_size()
            return original(data, *args, **kwargs)

        return call

    for name in ('all_gather', 'all_reduce'):  # the collectives the memories use
        setattr(dist, name, counted(name))

    dtype = getattr(torch, dtype_name)
    start = time.perf_counter()
    if memory_kind == 'queue':
        memory = ContrastQueue(num_samples, QUEUE_SIZE, FEAT_DIM, dtype=dtype)
        loss = CRDLoss(
            memory='queue', queue_size=QUEUE_SIZE, feat_dim=FEAT_DIM, negative_sampling='uniform'
        )
    else:
        bank_type = ShardedMemoryBank if memory_kind == 'sharded' else ContrastMemoryBank
        memory = bank_type(num_samples, FEAT_DIM, 0.5, dtype=dtype)
        loss = CRDLoss(
            num_negatives=NUM_NEGATIVES,
            feat_dim=FEAT_DIM,
            negative_sampling='uniform',
            share_negatives=not per_sample,
        )
    loss.attach_memory_bank(memory)
    build_s = time.perf_counter() - start
    tensors = [memory.student, memory.teacher] + [
        getattr(memory, n) for n in ('written', 'sample_idx', 'entry_labels') if hasattr(memory, n)
    ]
    memory_bytes = sum(
        t.untyped_storage().nbytes() for t in tensors
    )  # storage: a view's whole allocation
    generator = torch.Generator().manual_seed(rank)

    def step(i):
        memory.reseed(i)
        idx = torch.randint(0, num_samples, (batch,), generator=generator)
        e_s = F.normalize(torch.randn(batch, FEAT_DIM, generator=generator), dim=1).requires_grad_()
        e_t = F.normalize(torch.randn(batch, FEAT_DIM, generator=generator), dim=1).requires_grad_()
        loss(e_s, e_t, [BaseDataElement(sample_idx=int(j)) for j in idx]).backward()
        memory.apply_staged()

    step(0)
    torch_dist.barrier()
    sent[0] = 0
    start = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    elapsed = torch.tensor([(time.perf_counter() - start) / steps])
    per_step_sent = sent[0] / steps
    torch_dist.all_reduce(elapsed, op=torch_dist.ReduceOp.MAX)
    result = dict(
        rank=rank,
        build_s=build_s,
        step_s=float(elapsed),
        memory_bytes=memory_bytes,
        peak_rss=peak_rss(),
        sent_bytes=per_step_sent,
    )
    queue.put(result)
    torch_dist.barrier()
    torch_dist.destroy_process_group()


def run_case(memory_kind, scale, world, dtype_name, batch, steps, per_sample):
    """W processes of one case; returns the per-rank results (rank order)."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(
                r,
                world,
                port,
                memory_kind,
                SCALES[scale],
                dtype_name,
                batch,
                steps,
                per_sample,
                queue,
            ),
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(
                f'{memory_kind} {scale} W={world}: a worker exited with {p.exitcode}'
            )
    return sorted(results, key=lambda r: r['rank'])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scales', nargs='+', default=list(SCALES), choices=list(SCALES))
    parser.add_argument('--worlds', nargs='+', type=int, default=[1, 2, 4, 8])
    parser.add_argument('--memories', nargs='+', default=list(MEMORIES), choices=MEMORIES)
    parser.add_argument(
        '--dtype',
        nargs='+',
        default=['imagenet=float32', 'glint360k=float16'],
        help='bank dtype per scale, scale=dtype',
    )
    parser.add_argument('--batch', type=int, default=256, help='samples per rank per step')
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument(
        '--per-sample',
        action='store_true',
        help='per-sample negatives (default: one shared set of K per batch)',
    )
    parser.add_argument(
        '--max-total-gb',
        type=float,
        default=17.0,
        help='do not start a case whose processes would exceed this in all, by the formula',
    )
    parser.add_argument('--out', help='write the Markdown report here')
    parser.add_argument('--case', help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtypes = dict(item.split('=') for item in args.dtype)
    if args.case:  # child process: one case, as JSON
        memory_kind, scale, world = args.case.split(':')
        print(
            json.dumps(
                run_case(
                    memory_kind,
                    scale,
                    int(world),
                    dtypes[scale],
                    args.batch,
                    args.steps,
                    args.per_sample,
                )
            )
        )
        return

    rows = []
    for scale in args.scales:
        element = 2 if dtypes[scale] in ('float16', 'bfloat16') else 4
        for memory_kind in args.memories:
            for world in args.worlds:
                formula = bank_bytes(memory_kind, SCALES[scale], world, element)
                row = dict(
                    scale=scale,
                    memory=memory_kind,
                    world=world,
                    dtype=dtypes[scale],
                    formula=formula,
                )
                if (formula + PROCESS_OVERHEAD) * world > args.max_total_gb * 2**30:
                    row['skipped'] = True
                else:
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            '--case',
                            f'{memory_kind}:{scale}:{world}',
                            '--batch',
                            str(args.batch),
                            '--steps',
                            str(args.steps),
                            '--dtype',
                            *args.dtype,
                        ]
                        + (['--per-sample'] if args.per_sample else []),
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    row['ranks'] = json.loads(out.strip().splitlines()[-1])
                rows.append(row)
                print(f'{scale} {memory_kind} W={world}: {row}', file=sys.stderr)

    negatives = 'per-sample' if args.per_sample else 'shared'
    lines = [
        f'Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU, '
        f'gloo, one thread per process; D={FEAT_DIM}, K={NUM_NEGATIVES} {negatives} uniform '
        f'negatives (banks), Q={QUEUE_SIZE} (queue), B={args.batch} per rank; '
        f'{args.steps} timed steps after one warm-up; '
        'step = forward + backward + cross-rank update; W processes share the cores.',
        '',
        '| N | memory | dtype | W | memory per rank (MB) | peak RSS per rank (MB) | '
        'peak RSS all ranks (GB) | '
        'build (s) | step (s) | bytes sent per rank per step |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for row in rows:
        head = f'| {SCALES[row["scale"]]:,} | {row["memory"]} | {row["dtype"]} | {row["world"]} |'
        if row.get('skipped'):
            lines.append(
                f'{head} {row["formula"] / 2**20:,.0f} (formula) | - | '
                f'{row["formula"] * row["world"] / 2**30:.1f} (banks alone, formula) | not run | '
                f'not run | - |'
            )
            continue
        ranks = row['ranks']
        lines.append(
            f'{head} {max(r["memory_bytes"] for r in ranks) / 2**20:,.0f} | '
            f'{max(r["peak_rss"] for r in ranks) / 2**20:,.0f} | '
            f'{sum(r["peak_rss"] for r in ranks) / 2**30:.1f} | '
            f'{max(r["build_s"] for r in ranks):.1f} | '
            f'{ranks[0]["step_s"]:.3f} | {max(r["sent_bytes"] for r in ranks) / 1e6:.2f} MB |'
        )
    write_report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
