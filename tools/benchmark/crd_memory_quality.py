"""Top-1 of CRD with the full bank, sharded banks and a queue, against the student alone.

Two regimes, each trained through ``tools/train.py`` with real configs, for each seed:

* the demo's digits (default): ``configs/demo/crd_kd.py`` with ``--cfg-options`` only (the
  demo's teacher, trained first unless ``--teacher-ckpt`` is given); 1 process of batch 64,
  K = 1,024 class-exact negatives. Saturated (every memory reaches ~98%): it shows that the
  memories run, not which trains better.
* any folder of small photos (``--data-root``, mmpretrain's ``CustomDataset``:
  ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg``): the CRD paper's CIFAR recipe
  (``configs/crd/cifar100/crd_resnet56_resnet20_cifar100.py``: CE 1 + CRD 0.8, class-exact
  negatives, SGD lr 0.05, batch 64, RandomCrop(32, padding=4) + flip) with the networks of
  ``--teacher-arch``/``--student-arch``, ``--num-negatives`` K (= the queue's Q), the number
  of classes found in the folder and a cosine schedule of ``--epochs``. The student alone is
  the same student with CE only; the teacher (``--teacher-ckpt``, or trained first for
  ``--teacher-epochs``) is the same classifier config with the teacher network. The configs
  are written into each run's work dir (``<mode>.py``, inheriting the repository's), and
  every ``tools/train.py`` command is printed (to stderr) as it starts, to repeat any run.

Memories: ``bank`` (the config as it is, 1 process of batch 64), ``sharded``
(``CRDMemoryBankHook(shard_banks=True)`` on 2 gloo processes of batch 32: the same global
batch), ``queue`` (``CRDLoss(memory='queue', queue_size=K)``, class-exact masking, 1
process) with batch-normalised embedding heads (``CRDConnector(batch_norm=True)``, what
docs/memory.md prescribes for a queue), ``queue-paper-head`` (the queue with the paper's
Linear + L2 heads, which collapse), ``bank-batch-norm-head`` (the bank with the queue's heads);
``student`` trains the student alone (``--data-root`` only).

Prints a Markdown table: top-1 after the last epoch per seed, mean and spread, and (photos)
the CRD term's mean over the first and the last epoch.

    python tools/benchmark/crd_memory_quality.py --seeds 0 1 2 --work-dir work_dirs/memory_quality
    python tools/benchmark/crd_memory_quality.py --data-root data/cifar10_10k \\
        --teacher-arch resnet20 --student-arch resnet8 --epochs 5 --work-dir work_dirs/photos
"""

import argparse
import json
import os
import os.path as osp
import re
import socket
import statistics
import subprocess
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
from demo import METRIC, last_checkpoint, last_validation  # noqa: E402

LOSS = 'model.distiller.distill_losses.loss_crd'
CRD_TERM = 'distill.loss_crd'
QUEUE = [f'{LOSS}.memory=queue', f'{LOSS}.queue_size={{k}}', f'{LOSS}.num_negatives=None']
# what docs/memory.md prescribes for a queue: batch-normalised embedding heads
BATCH_NORM_HEADS = [f'model.distiller.connectors.crd_{net}.batch_norm=True' for net in 'st']
# memory -> (processes, --cfg-options); {k}: the number of negatives (the queue's length);
# 'queue-paper-head' is the queue with the paper's heads (Linear + L2), which collapses;
# 'bank-batch-norm-head' separates what the heads add from what the memory does
MEMORIES = {
    'bank': (1, []),
    'sharded': (2, ['custom_hooks.0.shard_banks=True', 'train_dataloader.batch_size=32']),
    'queue': (1, [*QUEUE, *BATCH_NORM_HEADS]),
    'queue-paper-head': (1, QUEUE),
    'bank-batch-norm-head': (1, BATCH_NORM_HEADS),
}
MODES = ['student', *MEMORIES]

PHOTO_RECIPE = 'configs/crd/cifar100/crd_resnet56_resnet20_cifar100.py'
PHOTO_CLASSIFIER = 'configs/cifar100_students/resnet20_cifar100.py'
# The photo configs: the repository's CIFAR configs with the data, networks and schedule swapped.
PHOTO_DATA = """
_base_ = '{base}'
num_classes = {num_classes}
data_root = '{data_root}'
# LoadImageFromFile reads BGR: convert, then normalise with CIFAR's RGB statistics
data_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor', num_classes=num_classes,
    mean=[129.3105, 124.1085, 112.404], std=[68.2125, 65.4075, 70.4055], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
folder = dict(_delete_=True, _scope_='mmpretrain', type='CustomDataset', data_root=data_root)
train_dataloader = dict(
    num_workers=2, dataset=dict(folder, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=2, dataset=dict(folder, data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1,))
test_evaluator = val_evaluator
param_scheduler = dict(_delete_=True, type='CosineAnnealingLR', by_epoch=True, T_max={epochs},
                       convert_to_iter_based=True)
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(checkpoint=dict(interval={epochs}), logger=dict(interval=50))
"""
PHOTO_CLASSIFIER_MODEL = """
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(_delete_=True, type='CifarResNet', arch='{arch}'),
    head=dict(num_classes=num_classes, in_channels={width}))
"""
PHOTO_DISTILL_MODEL = """
student = dict(
    _scope_='mmpretrain', type='ImageClassifier', data_preprocessor=data_preprocessor,
    backbone=dict(type='CifarResNet', arch='{student}'), neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=num_classes, in_channels={student_width},
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
model = dict(
    data_preprocessor=data_preprocessor,
    architecture=dict(student, _delete_=True),
    teacher=dict(student, _delete_=True, backbone=dict(type='CifarResNet', arch='{teacher}'),
                 head=dict(student['head'], in_channels={teacher_width})),
    teacher_ckpt='{teacher_ckpt}',
    distiller=dict(
        connectors=dict(crd_s=dict(dim_in={student_width}), crd_t=dict(dim_in={teacher_width})),
        distill_losses=dict(loss_crd=dict(num_negatives={k}))))
"""


def cifar_resnet_width(arch: str) -> int:
    """The pooled feature width of crd_mm's ``CifarResNet`` arch (64, or 256 for the x4 ones)."""
    return 256 if arch.endswith('x4') else 64


def photo_config(work_dir: str, name: str, args, epochs: int, arch=None, teacher_ckpt=None) -> str:
    """Write ``WORK_DIR/<name>.py`` for the photos: a classifier of ``arch``, or the recipe."""
    root = osp.abspath(args.data_root)
    num_classes = len([d for d in os.listdir(osp.join(root, 'train')) if not d.startswith('.')])
    base = PHOTO_CLASSIFIER if arch else PHOTO_RECIPE
    text = PHOTO_DATA.format(
        base=osp.join(REPO_ROOT, base), num_classes=num_classes, data_root=root, epochs=epochs
    )
    if arch:
        text += PHOTO_CLASSIFIER_MODEL.format(arch=arch, width=cifar_resnet_width(arch))
    else:
        text += PHOTO_DISTILL_MODEL.format(
            student=args.student_arch,
            teacher=args.teacher_arch,
            student_width=cifar_resnet_width(args.student_arch),
            teacher_width=cifar_resnet_width(args.teacher_arch),
            teacher_ckpt=osp.abspath(teacher_ckpt),
            k=args.num_negatives,
        )
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, f'{name}.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def train(config, work_dir, options, nproc=1):
    """tools/train.py (under torch.distributed.run for nproc > 1); the new run's folder."""
    before = set(os.listdir(work_dir)) if osp.isdir(work_dir) else set()
    args = [config, '--work-dir', work_dir] + (['--cfg-options', *options] if options else [])
    if nproc > 1:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        cmd = [
            sys.executable,
            '-m',
            'torch.distributed.run',
            f'--nproc_per_node={nproc}',
            f'--master_port={port}',
            osp.join(REPO_ROOT, 'tools', 'train.py'),
            *args,
            '--launcher',
            'pytorch',
        ]
    else:
        cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), *args]
    env = dict(
        os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'), CUDA_VISIBLE_DEVICES=''
    )
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    print(' '.join(cmd[1:]), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    # mmengine's <timestamp> folder of this run (a sharded run also writes crd_memory/ there)
    runs = [d for d in set(os.listdir(work_dir)) - before if re.fullmatch(r'\d{8}_\d{6}', d)]
    return osp.join(work_dir, max(runs))


def crd_term_by_epoch(run_dir: str) -> list:
    """The CRD term's mean over each epoch's logged training iterations (the json log)."""
    timestamp = osp.basename(run_dir)
    sums = {}
    with open(osp.join(run_dir, 'vis_data', f'{timestamp}.json')) as f:
        for line in f:
            record = json.loads(line)
            if CRD_TERM in record and 'epoch' in record:
                sums.setdefault(record['epoch'], []).append(record[CRD_TERM])
    return [statistics.mean(sums[e]) for e in sorted(sums)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--modes', nargs='+', choices=MODES, help='default: all that apply')
    parser.add_argument('--work-dir', default='work_dirs/memory_quality')
    parser.add_argument(
        '--teacher-ckpt', help='the teacher checkpoint (trained first when not given)'
    )
    parser.add_argument('--data-root', help='a CustomDataset folder of photos (train/ and val/)')
    parser.add_argument('--teacher-arch', default='resnet56', help='photos: CifarResNet arch')
    parser.add_argument('--student-arch', default='resnet20', help='photos: CifarResNet arch')
    parser.add_argument('--epochs', type=int, default=15, help='photos: training epochs')
    parser.add_argument('--teacher-epochs', type=int, default=30, help='photos: teacher epochs')
    parser.add_argument('--num-negatives', type=int, default=4096, help='photos: K = Q')
    args = parser.parse_args()
    modes = args.modes or (MODES if args.data_root else list(MEMORIES))
    if 'student' in modes and not args.data_root:
        parser.error('--modes student needs --data-root (the demo table has its own student row)')
    teacher = args.teacher_ckpt
    if teacher is None:
        teacher_dir = osp.join(args.work_dir, 'teacher')
        if args.data_root:
            config = photo_config(
                teacher_dir, 'teacher', args, args.teacher_epochs, arch=args.teacher_arch
            )
            train(config, teacher_dir, [])
        else:
            train('configs/demo/teacher.py', teacher_dir, [])
        teacher = last_checkpoint(teacher_dir)
    results, crd_terms = {}, {}
    for mode in modes:
        nproc, options = MEMORIES.get(mode, (1, []))
        options = [option.format(k=args.num_negatives) for option in options]
        for seed in args.seeds:
            work_dir = osp.join(args.work_dir, f'{mode}_seed{seed}')
            if args.data_root:
                if mode == 'student':
                    config = photo_config(work_dir, mode, args, args.epochs, arch=args.student_arch)
                else:
                    config = photo_config(work_dir, mode, args, args.epochs, teacher_ckpt=teacher)
                seeded = [f'randomness.seed={seed}', *options]
            else:
                config = 'configs/demo/crd_kd.py'
                seeded = [f'model.teacher_ckpt={teacher}', f'randomness.seed={seed}', *options]
            run_dir = train(config, work_dir, seeded, nproc)
            top1 = last_validation(run_dir)[METRIC]
            results.setdefault(mode, []).append(top1)
            if mode != 'student':
                terms = crd_term_by_epoch(run_dir)
                crd_terms.setdefault(mode, []).append((terms[0], terms[-1]))
            print(f'{mode} seed {seed}: {top1:.2f}', file=sys.stderr, flush=True)
    seeds = ' | '.join(f'seed {s}' for s in args.seeds)
    lines = [
        f'| memory | processes x batch | {seeds} | mean | min-max '
        '| CRD term, first -> last epoch |',
        '|---|---|' + '---|' * len(args.seeds) + '---|---|---|',
    ]
    for mode, values in results.items():
        nproc = MEMORIES.get(mode, (1,))[0]
        terms = crd_terms.get(mode)
        term = ' / '.join(f'{first:.2f} -> {last:.2f}' for first, last in terms) if terms else '-'
        lines.append(
            f'| {mode} | {nproc} x {64 // nproc} | '
            + ' | '.join(f'{v:.2f}' for v in values)
            + f' | {statistics.mean(values):.2f} | {min(values):.2f}-{max(values):.2f} | {term} |'
        )
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
