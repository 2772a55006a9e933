"""Top-1 on the demo's digits: CRD+KD with the full bank, sharded banks and a queue.

Sharded banks run in 2 processes.

Each run is ``configs/demo/crd_kd.py`` through ``tools/train.py`` with
``--cfg-options`` only (the demo's teacher, trained first unless
``--teacher-ckpt`` is given), for each seed:

* ``bank``: the config as it is (1 process, batch 64, K = 1,024 class-exact negatives),
* ``sharded``: ``CRDMemoryBankHook(shard_banks=True)`` on 2 gloo processes of
  batch 32 (the same global batch),
* ``queue``: ``CRDLoss(memory='queue', queue_size=1024)``, class-exact masking (1 process).

Prints a Markdown table: top-1 after the last epoch per seed, mean and spread.

    python tools/benchmark/crd_memory_quality.py --seeds 0 1 2 --work-dir work_dirs/memory_quality
"""

import argparse
import os
import os.path as osp
import socket
import statistics
import subprocess
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
from demo import METRIC, last_checkpoint, last_validation  # noqa: E402

LOSS = 'model.distiller.distill_losses.loss_crd'
MODES = {
    'bank': (1, []),
    'sharded': (2, ['custom_hooks.0.shard_banks=True', 'train_dataloader.batch_size=32']),
    'queue': (1, [f'{LOSS}.memory=queue', f'{LOSS}.queue_size=1024', f'{LOSS}.num_negatives=None']),
}


def train(config, work_dir, options, nproc=1):
    """tools/train.py (under torch.distributed.run for nproc > 1); the new run's last validation."""
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
    run = max(d for d in set(os.listdir(work_dir)) - before if osp.isdir(osp.join(work_dir, d)))
    return last_validation(osp.join(work_dir, run))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--modes', nargs='+', default=list(MODES), choices=list(MODES))
    parser.add_argument('--work-dir', default='work_dirs/memory_quality')
    parser.add_argument(
        '--teacher-ckpt', help="the demo teacher's checkpoint (trained first when not given)"
    )
    args = parser.parse_args()
    teacher = args.teacher_ckpt
    if teacher is None:
        teacher_dir = osp.join(args.work_dir, 'teacher')
        train('configs/demo/teacher.py', teacher_dir, [])
        teacher = last_checkpoint(teacher_dir)
    results = {}
    for mode in args.modes:
        nproc, options = MODES[mode]
        for seed in args.seeds:
            metrics = train(
                'configs/demo/crd_kd.py',
                osp.join(args.work_dir, f'{mode}_seed{seed}'),
                [f'model.teacher_ckpt={teacher}', f'randomness.seed={seed}', *options],
                nproc,
            )
            results.setdefault(mode, []).append(metrics[METRIC])
            print(f'{mode} seed {seed}: {metrics[METRIC]:.2f}', file=sys.stderr, flush=True)
    lines = [
        '| memory | processes x batch | '
        + ' | '.join(f'seed {s}' for s in args.seeds)
        + ' | mean | min-max |',
        '|---|---|' + '---|' * len(args.seeds) + '---|---|',
    ]
    for mode, values in results.items():
        nproc = MODES[mode][0]
        lines.append(
            f'| {mode} | {nproc} x {64 // nproc} | '
            + ' | '.join(f'{v:.2f}' for v in values)
            + f' | {statistics.mean(values):.2f} | {min(values):.2f}-{max(values):.2f} |'
        )
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
