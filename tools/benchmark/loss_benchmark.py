"""Forward + backward time and peak memory per step of every crd_mm loss, and CRCD's capacity.

``--mode losses`` (default): each loss at B=64 on CIFAR-100 scale (N=50,000,
D=128; CRD K=16384, CRCD K=500 as in the papers), each in a fresh subprocess.
``--mode crcd-capacity``: the peak memory of one CRCD step (both branches,
forward + backward) for a grid of (B, K), to find the largest that fit in a
budget (8 GB by default). Peak memory is the step's increase over the
process's memory before the first step (sampled RSS on CPU,
``max_memory_allocated`` on CUDA).

    python tools/benchmark/loss_benchmark.py --out docs/benchmarks/losses_cpu.md
    python tools/benchmark/loss_benchmark.py --mode crcd-capacity \
        --out docs/benchmarks/crcd_capacity_cpu.md
"""

import argparse
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crd_bank_benchmark import time_steps, write_report  # noqa: E402

NUM_SAMPLES, FEAT_DIM, NUM_CLASSES, CHANNELS = 50_000, 128, 100, 256
LOSSES = {
    'CRD (per-sample negatives, K=16384)': dict(type='CRDLoss', num_negatives=16384),
    'CRD (shared negatives, K=16384)': dict(
        type='CRDLoss', num_negatives=16384, share_negatives=True, negative_sampling='uniform'
    ),
    'DCD': dict(type='DCDLoss'),
    'CRCD feature relation (K=500)': dict(type='CRCDLoss', num_negatives=500),
    'CRCD gradient relation (K=500)': dict(
        type='CRCDLoss',
        relation='gradient',
        num_negatives=500,
        student_channels=CHANNELS,
        teacher_channels=CHANNELS,
    ),
    'CKD': dict(type='CKDLoss'),
}


def run_case(name, cfg, batch, steps, device):
    """Build one loss (with a bank when it needs one) and time ``steps`` steps after a warm-up."""
    import torch
    import torch.nn.functional as F
    from mmengine.structures import BaseDataElement
    from mmrazor.registry import MODELS

    import crd_mm  # noqa: F401
    from crd_mm.memory import ContrastMemoryBank, MemoryBankClient

    torch.manual_seed(0)
    loss = MODELS.build(dict(cfg)).to(device)
    if isinstance(loss, MemoryBankClient):
        spec = loss.bank_requirements()
        labels = torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,))
        bank = ContrastMemoryBank(
            NUM_SAMPLES,
            spec['feat_dim'],
            spec['momentum'],
            labels=labels if spec['needs_labels'] else None,
            device=device,
        )
        loss.attach_memory_bank(bank)

    def step(i):
        idx = torch.randperm(NUM_SAMPLES, device=device)[:batch]
        samples = [
            BaseDataElement(sample_idx=j, gt_label=torch.tensor([int(j) % NUM_CLASSES]))
            for j in idx
        ]
        if cfg['type'] == 'CKDLoss':
            args = (
                torch.randn(batch, NUM_CLASSES, device=device, requires_grad=True),
                torch.randn(batch, NUM_CLASSES, device=device),
            )
        elif cfg.get('relation') == 'gradient':
            head_s, head_t = (
                torch.nn.Linear(CHANNELS, NUM_CLASSES),
                torch.nn.Linear(CHANNELS, NUM_CLASSES),
            )
            feats_s = torch.randn(batch, CHANNELS, device=device, requires_grad=True)
            feats_t = torch.randn(batch, CHANNELS, device=device)
            args = (
                feats_s,
                feats_t,
                samples,
                head_s.to(device)(feats_s),
                head_t.to(device)(feats_t),
                head_t.weight,
            )
        else:
            e_s = F.normalize(torch.randn(batch, FEAT_DIM, device=device), dim=1).requires_grad_()
            e_t = F.normalize(torch.randn(batch, FEAT_DIM, device=device), dim=1).requires_grad_()
            args = (e_s, e_t) if cfg['type'] == 'DCDLoss' else (e_s, e_t, samples)
        if isinstance(loss, MemoryBankClient):
            bank.reseed(i)
        loss(*args).backward()
        if isinstance(loss, MemoryBankClient):
            bank.apply_staged()
        if device == 'cuda':
            torch.cuda.synchronize()

    step_s, peak = time_steps(step, steps, device)
    return dict(
        name=name,
        batch=batch,
        num_negatives=cfg.get('num_negatives'),
        step_s=step_s,
        peak_bytes=peak,
    )


def child(args, name, cfg, batch):
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            '--case',
            json.dumps([name, cfg, batch]),
            '--steps',
            str(args.steps),
            '--device',
            args.device,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(result, file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--mode', choices=['losses', 'crcd-capacity'], default='losses')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--budget-gb', type=float, default=8.0)
    parser.add_argument('--out', help='write the Markdown report here')
    parser.add_argument('--case', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, cfg, batch = json.loads(args.case)
        print(json.dumps(run_case(name, cfg, batch, args.steps, args.device)))
        return

    header = (
        f'Machine: {platform.machine()}, {os.cpu_count()} cores, device {args.device}; '
        f'N={NUM_SAMPLES}, '
        f'D={FEAT_DIM}; {args.steps} timed steps after one warm-up; step = forward + backward '
        '(+ bank update for bank losses).'
    )
    if args.mode == 'losses':
        rows = [child(args, name, cfg, args.batch) for name, cfg in LOSSES.items()]
        crd = rows[0]
        lines = [
            header,
            '',
            f'| loss (B={args.batch}) | step (ms) | step peak memory (MB) | time vs CRD |',
            '|---|---|---|---|',
        ]
        lines += [
            f'| {r["name"]} | {r["step_s"] * 1e3:.1f} | {r["peak_bytes"] / 2**20:.1f} | '
            f'{r["step_s"] / crd["step_s"]:.2f}x |'
            for r in rows
        ]
    else:
        lines = [
            header,
            '',
            f'CRCD feature relation, both branches; budget {args.budget_gb:g} GB.',
            '',
            '| K | B | step (s) | step peak memory (GB) | fits |',
            '|---|---|---|---|---|',
        ]
        for k in (500, 4096, 16384):
            for batch in (64, 128, 256, 384, 512):
                cfg = dict(type='CRCDLoss', num_negatives=k, negative_sampling='uniform')
                r = child(args, f'CRCD K={k}', cfg, batch)
                fits = r['peak_bytes'] <= args.budget_gb * 1e9
                lines.append(
                    f'| {k} | {batch} | {r["step_s"]:.2f} | {r["peak_bytes"] / 1e9:.2f} | '
                    f'{"yes" if fits else "no"} |'
                )
                if not fits:
                    break
    write_report('\n'.join(lines), args.out)


if __name__ == '__main__':
    main()
