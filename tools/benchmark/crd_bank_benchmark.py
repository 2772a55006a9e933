"""Benchmark crd_mm's CRD against mmrazor 1.0.0's and torchdistill 1.1.5's CRDLoss.

All on identical inputs, in one run.

For each scale (CIFAR-100: N=50,000, B=64; ImageNet: N=1,281,167, B=256; K=16384,
D=128) it measures, each case in a fresh subprocess so peaks do not mix:
  * bank construction time (mmrazor: ContrastMemory incl. its alias sampler;
    crd_mm: ContrastMemoryBank incl. class index for class-aware sampling),
  * forward + backward + bank update time per step and the step's peak memory
    above the process's memory before the first step (sampled RSS on CPU,
    ``max_memory_allocated`` on CUDA),
  * bytes each rank sends per step to keep banks consistent.
Results are printed as a Markdown table and, with ``--out``, written to a file.

torchdistill is a benchmark-only dependency, never a runtime one; install it
(without its dependencies, it needs only torch here) into a folder of its own,
which ``--deps-dir`` puts on ``sys.path``; without it the torchdistill case is skipped:

    pip install --no-deps --target /tmp/crd_mm_benchmark_deps torchdistill==1.1.5
    python tools/benchmark/crd_bank_benchmark.py --deps-dir /tmp/crd_mm_benchmark_deps
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

SCALES = dict(
    cifar100=dict(num_samples=50_000, batch=64, classes=100),
    imagenet=dict(num_samples=1_281_167, batch=256, classes=1000),
)
CASES = ('mmrazor', 'torchdistill', 'crd_mm-per-sample', 'crd_mm-shared')
NUM_NEGATIVES, FEAT_DIM = 16384, 128


class PeakRSS:
    """Samples this process's resident memory every 2 ms; ``peak`` is the maximum seen."""

    def __init__(self):
        self.peak, self._stop = self.current(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.current())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_report(report, out=None):
    """Print a benchmark's Markdown report and, given ``out``, write it there too."""
    print(report)
    if out:
        os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
        with open(out, 'w') as f:
            f.write(report + '\n')


def time_steps(step, steps, device):
    """Run ``step(0)`` as a warm-up, then time ``steps`` steps.

    Returns (seconds per step, peak bytes above the level before).
    """
    import torch

    step(0)
    baseline = PeakRSS.current()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    with PeakRSS() as rss:
        start = time.perf_counter()
        for i in range(steps):
            step(i + 1)
        step_s = (time.perf_counter() - start) / steps
    peak = (
        (torch.cuda.max_memory_allocated() - base_cuda) if device == 'cuda' else rss.peak - baseline
    )
    return step_s, peak


def run_case(case, scale, steps, device, deps_dir=None):
    """Build the bank and run ``steps`` timed steps (after one warm-up) of one case."""
    import torch
    import torch.nn.functional as F
    from mmengine.structures import BaseDataElement

    import crd_mm  # noqa: F401  (first: its compat patches let mmrazor import on this torch)
    from crd_mm.memory import ContrastMemoryBank
    from crd_mm.models.losses import CRDLoss

    cfg = SCALES[scale]
    n, b = cfg['num_samples'], cfg['batch']
    torch.manual_seed(0)
    labels = torch.randint(0, cfg['classes'], (n,))
    start = time.perf_counter()
    if case == 'mmrazor':
        from mmrazor.models.losses.crd_loss import CRDLoss as MMRazorCRDLoss

        loss = MMRazorCRDLoss(neg_num=NUM_NEGATIVES, sample_n=n, dim_out=FEAT_DIM).to(device)
        sent = 0  # its banks are per-rank buffers: nothing is synchronised
    elif case == 'torchdistill':
        sys.path.insert(0, deps_dir)
        from torchdistill.losses.mid_level import CRDLoss as TorchdistillCRDLoss

        # its forward reads io dicts: embeddings at module paths 's'/'t', indices at 'e'
        loss = TorchdistillCRDLoss('s', 'e', 't', FEAT_DIM, n, NUM_NEGATIVES, n).to(device)
        sent = 0  # per-rank buffers, as mmrazor's
    else:
        shared = case.endswith('shared')
        loss = CRDLoss(
            num_negatives=NUM_NEGATIVES,
            feat_dim=FEAT_DIM,
            share_negatives=shared,
            negative_sampling='uniform' if shared else 'class_exact',
        )
        bank = ContrastMemoryBank(
            n, FEAT_DIM, 0.5, labels=None if shared else labels, device=device
        )
        loss.attach_memory_bank(bank)
        sent = b * (8 + 2 * FEAT_DIM * 4) + 8  # indices + both embeddings + the row count
    if device == 'cuda':
        torch.cuda.synchronize()
    build_s = time.perf_counter() - start

    def step(i):
        idx = torch.randint(0, n, (b,), device=device)
        e_s = F.normalize(torch.randn(b, FEAT_DIM, device=device), dim=1).requires_grad_()
        e_t = F.normalize(torch.randn(b, FEAT_DIM, device=device), dim=1).requires_grad_()
        samples = [BaseDataElement(sample_idx=j) for j in idx]
        if case == 'mmrazor':
            loss(e_s, e_t, samples).backward()
        elif case == 'torchdistill':
            # its negatives come from its dataset wrapper (data loading), drawn here uniformly
            contrast = torch.randint(0, n, (b, NUM_NEGATIVES + 1), device=device)
            contrast[:, 0] = idx
            loss(
                {'s': {'output': e_s}, 'e': {'input': {'pos_idx': idx, 'contrast_idx': contrast}}},
                {'t': {'output': e_t}},
            ).backward()
        else:
            bank.reseed(i)
            loss(e_s, e_t, samples).backward()
            bank.apply_staged()
        if device == 'cuda':
            torch.cuda.synchronize()

    step_s, peak = time_steps(step, steps, device)
    return dict(
        case=case,
        scale=scale,
        build_s=build_s,
        step_s=step_s,
        peak_bytes=peak,
        sync_bytes_per_step=sent,
        broadcast_bytes=2 * n * FEAT_DIM * 4,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scales', nargs='+', default=list(SCALES), choices=list(SCALES))
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--out', help='write the Markdown report here')
    parser.add_argument(
        '--deps-dir',
        help='folder holding torchdistill (pip install --target); '
        'without it the torchdistill case is skipped',
    )
    parser.add_argument('--case', help=argparse.SUPPRESS)
    parser.add_argument('--scale', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # child process: one measurement, as JSON
        print(json.dumps(run_case(args.case, args.scale, args.steps, args.device, args.deps_dir)))
        return

    rows = []
    cases = [c for c in CASES if c != 'torchdistill' or args.deps_dir]
    for scale in args.scales:
        for case in cases:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    '--case',
                    case,
                    '--scale',
                    scale,
                    '--steps',
                    str(args.steps),
                    '--device',
                    args.device,
                ]
                + (['--deps-dir', os.path.abspath(args.deps_dir)] if args.deps_dir else []),
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f'{scale} {case}: {rows[-1]}', file=sys.stderr)

    lines = [
        f'Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'device {args.device}; K={NUM_NEGATIVES}, D={FEAT_DIM}, {args.steps} timed steps after '
        'one warm-up; step = forward + backward + bank update.',
        '',
        '| scale | implementation | bank build (s) | step (s) | step peak memory (MB) | '
        'speed vs mmrazor | memory vs mmrazor | '
        'bytes sent per rank per step to keep banks in sync |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for row in rows:
        ref = next(r for r in rows if r['scale'] == row['scale'] and r['case'] == 'mmrazor')
        sync = (
            f'0 (banks diverge); {ref["broadcast_bytes"] / 1e6:.0f} MB if buffers are broadcast'
            if row['case'] in ('mmrazor', 'torchdistill')
            else f'{row["sync_bytes_per_step"] / 1e3:.1f} KB'
        )
        lines.append(
            f'| {row["scale"]} | {row["case"]} | {row["build_s"]:.2f} | {row["step_s"]:.3f} | '
            f'{row["peak_bytes"] / 2**20:.0f} | {ref["step_s"] / row["step_s"]:.2f}x | '
            f'{ref["peak_bytes"] / max(row["peak_bytes"], 1):.2f}x | {sync} |'
        )
    write_report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
