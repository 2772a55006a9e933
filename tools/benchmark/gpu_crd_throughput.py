"""Training steps per second of ResNet-34 -> ResNet-18 at ImageNet scale, with and without CRD.

Synthetic tensors, no dataset files: one random batch of B images and, for
CRD, two memory banks of N = 1,281,167 rows (ImageNet-1k's training set) with
random labels of 1000 classes. Each case builds mmpretrain's ResNet-34
(teacher, frozen) and ResNet-18 (student, SGD) and times training steps the
way a Runner with ``CRDMemoryBankHook`` runs them: reseed the bank's sampler,
teacher forward, student forward, cross-entropy (+ CRD 0.8 on the pooled
features through two CRDConnectors), backward, SGD step, then the bank update.

Cases: ``without CRD`` (teacher + student, cross-entropy only), ``CRD
per-sample`` (K class-exact negatives per sample, the paper's setting) and
``CRD shared`` (K uniform negatives shared by the batch).

    python tools/benchmark/gpu_crd_throughput.py                    # GPU: B=256, K=16384, 300 steps
    python tools/benchmark/gpu_crd_throughput.py --device cpu --iters 2 --num-samples 5000 \\
        --batch-size 8 --image-size 64                             # a quick check that it runs
"""

import argparse
import time

import torch
import torch.nn.functional as F

CASES = ('without CRD', 'CRD per-sample', 'CRD shared')
NUM_CLASSES, FEAT_DIM, CRD_WEIGHT = 1000, 128, 0.8


def classifier(depth):
    from mmpretrain.registry import MODELS

    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet', depth=depth),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=NUM_CLASSES,
                in_channels=512,
                loss=dict(type='CrossEntropyLoss'),
            ),
        )
    )


def batches(num_samples, labels, batch_size, count):
    """``count`` batches of data samples with distinct dataset indices and training-set labels."""
    from mmpretrain.structures import DataSample

    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        idx = torch.randperm(num_samples, generator=gen)[:batch_size]
        samples = [DataSample(sample_idx=int(i)).set_gt_label(int(labels[i])) for i in idx]
        out.append((samples, labels[idx]))
    return out


def run_case(case, args):
    """Build the models (and the bank) of one case and time ``args.iters`` steps after a warm-up."""
    from crd_mm.memory import ContrastMemoryBank
    from crd_mm.models.connectors import CRDConnector
    from crd_mm.models.losses import CRDLoss

    device, cuda = torch.device(args.device), args.device.startswith('cuda')
    torch.manual_seed(0)
    teacher = classifier(34).to(device).eval().requires_grad_(False)
    student = classifier(18).to(device).train()
    params = list(student.parameters())
    labels = torch.randint(
        0, NUM_CLASSES, (args.num_samples,), generator=torch.Generator().manual_seed(0)
    )
    build_s = 0.0
    if case != 'without CRD':
        shared = case == 'CRD shared'
        connectors = [CRDConnector(512, FEAT_DIM).to(device) for _ in range(2)]
        params += [p for c in connectors for p in c.parameters()]
        crd = CRDLoss(
            loss_weight=CRD_WEIGHT,
            num_negatives=args.num_negatives,
            feat_dim=FEAT_DIM,
            negative_sampling='uniform' if shared else 'class_exact',
            share_negatives=shared,
        )
        start = time.perf_counter()
        bank = ContrastMemoryBank(
            args.num_samples,
            FEAT_DIM,
            momentum=0.5,
            labels=None if shared else labels,
            device=device,
        )
        if cuda:
            torch.cuda.synchronize()
        build_s = time.perf_counter() - start
        crd.attach_memory_bank(bank)
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    pool = batches(args.num_samples, labels, args.batch_size, count=8)

    def step(i):
        samples, targets = pool[i % len(pool)]
        if case != 'without CRD':
            bank.reseed(i)  # CRDMemoryBankHook.before_train_iter
        with torch.autocast(device.type, enabled=args.amp):
            with torch.no_grad():
                t_feat = teacher.extract_feat(images)[-1]
            s_feat = student.extract_feat(images)[-1]
            loss = F.cross_entropy(student.head.fc(s_feat), targets.to(device))
            if case != 'without CRD':
                loss = loss + crd(connectors[0](s_feat), connectors[1](t_feat), samples)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if case != 'without CRD':
            bank.apply_staged()  # CRDMemoryBankHook.after_train_iter
        return loss

    for i in range(args.warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(args.iters):
        loss = step(args.warmup + i)
    final_loss = float(loss.detach())  # waits for the last step
    elapsed = time.perf_counter() - start
    peak = f'{torch.cuda.max_memory_allocated() / 2**30:.1f}' if cuda else '-'
    if not torch.isfinite(torch.tensor(final_loss)):
        raise FloatingPointError(f'{case}: the loss is {final_loss} after {args.iters} steps')
    return dict(
        case=case,
        steps_per_s=args.iters / elapsed,
        images_per_s=args.iters * args.batch_size / elapsed,
        build_s=build_s,
        peak_gib=peak,
        loss=final_loss,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--iters', type=int, default=300, help='timed steps per case')
    parser.add_argument(
        '--warmup', type=int, help='untimed steps before them (default: 10 on a GPU, 1 on the CPU)'
    )
    parser.add_argument('--num-samples', type=int, default=1_281_167, help='N, bank rows')
    parser.add_argument('--batch-size', type=int, default=256, help='B')
    parser.add_argument('--num-negatives', type=int, default=16384, help='K')
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument(
        '--amp', action='store_true', help='autocast + GradScaler, as tools/train.py --amp'
    )
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=CASES)
    args = parser.parse_args()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(
            '--device cuda, but torch sees no CUDA device; use --device cpu for a quick check'
        )
    if args.warmup is None:
        args.warmup = 10 if args.device.startswith('cuda') else 1

    from mmpretrain.utils import register_all_modules

    import crd_mm  # noqa: F401  (compat patches, registers crd_mm's modules)

    register_all_modules(init_default_scope=False)

    name = torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'
    print(
        f'device {name}, torch {torch.__version__}, N={args.num_samples:,}, B={args.batch_size}, '
        f'K={args.num_negatives}, D={FEAT_DIM}, {args.image_size}px, amp={args.amp}, '
        f'{args.iters} timed steps after {args.warmup} warm-up steps',
        flush=True,
    )
    rows = []
    for case in args.cases:
        rows.append(run_case(case, args))
        print(f'{case}: {rows[-1]}', flush=True)
    base = next((r for r in rows if r['case'] == 'without CRD'), None)
    print(
        '\n| case | steps/s | images/s | vs without CRD | bank build (s) | peak GPU memory (GiB) |'
    )
    print('|---|---|---|---|---|---|')
    for r in rows:
        ratio = f'{r["steps_per_s"] / base["steps_per_s"]:.2f}x' if base else '-'
        print(
            f'| {r["case"]} | {r["steps_per_s"]:.2f} | {r["images_per_s"]:.0f} | {ratio} | '
            f'{r["build_s"]:.1f} | {r["peak_gib"]} |'
        )


if __name__ == '__main__':
    main()
