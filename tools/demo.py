"""The crd_mm demo (`make demo`): distillation on scikit-learn's digits, on CPU.

Trains, one after the other and each through ``tools/train.py`` (the command
users run), every row of :data:`ROWS`: first the teacher, then the student
alone and the student distilled from that teacher by each method. The
distillation rows load the teacher run's last checkpoint
(``--cfg-options model.teacher_ckpt=...``). Each run logs its progress as
usual; at the end a table gives every row's top-1 accuracy on the test split,
read from the last validation in the run's json log.

Usage::

    python tools/demo.py [--work-dir work_dirs/demo] [--smoke]

``--smoke`` trains one epoch on a small subset (a quick end-to-end check).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import List, NamedTuple

from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
METRIC = 'accuracy/top1'


class Row(NamedTuple):
    """One line of the results table: a label and the config that produces it."""
    label: str
    config: str


# The first row trains the teacher that every distillation row loads.
ROWS = [
    Row('teacher: resnet20', 'configs/demo/teacher.py'),
    Row('student alone: resnet8', 'configs/demo/student.py'),
    Row('student + KD', 'configs/demo/kd.py'),
    Row('student + CRD + KD', 'configs/demo/crd_kd.py'),
    Row('student + DCD + KD', 'configs/demo/dcd_kd.py'),
    Row('student + CRCD + KD', 'configs/demo/crcd_kd.py'),
    Row('student + CKD', 'configs/demo/ckd.py'),
]

# One epoch on the first 96 training and 64 test images.
SMOKE_OPTIONS = [
    'train_cfg.max_epochs=1',
    'train_cfg.val_interval=1',
    'train_dataloader.dataset.indices=96',
    'val_dataloader.dataset.indices=64',
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--work-dir',
        default=osp.join('work_dirs', 'demo'),
        help='parent of the runs\' work directories (one per row)')
    parser.add_argument(
        '--smoke',
        action='store_true',
        help='train one epoch on a small subset (a quick end-to-end check)')
    return parser.parse_args()


def is_distillation(config: str) -> bool:
    """Whether the config is a distiller that loads a teacher checkpoint."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, config), import_custom_modules=False)
    return 'teacher_ckpt' in cfg.model


def last_validation(run_dir: str) -> dict:
    """The metrics of the last validation in the json log of a run's ``<timestamp>`` dir."""
    timestamp = osp.basename(run_dir)
    log_file = osp.join(run_dir, 'vis_data', f'{timestamp}.json')
    last = None
    with open(log_file) as f:
        for line in f:
            record = json.loads(line)
            if METRIC in record:
                last = record
    if last is None:
        raise RuntimeError(f'{log_file} holds no {METRIC!r}: the run never validated')
    return last


def run_row(row: Row, work_dir: str, options: List[str]) -> dict:
    """Train one row with tools/train.py; return the last validation's metrics."""
    before = set(os.listdir(work_dir)) if osp.isdir(work_dir) else set()
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), row.config,
           '--work-dir', work_dir]
    if options:
        cmd += ['--cfg-options', *options]
    print(f'\n[demo] {row.label}: {" ".join(cmd[1:])}', flush=True)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    # These networks are too small to gain from intra-op threads, and on a
    # busy machine idle-spinning OpenMP threads made training ~10x slower.
    env.setdefault('OMP_NUM_THREADS', '1')
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f'[demo] {row.label}: tools/train.py exited with {result.returncode}')
    new_runs = sorted(d for d in set(os.listdir(work_dir)) - before
                      if osp.isdir(osp.join(work_dir, d)))
    if not new_runs:
        sys.exit(f'[demo] {row.label}: no new run directory in {work_dir}')
    return last_validation(osp.join(work_dir, new_runs[-1]))


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine's CheckpointHook saved last in ``work_dir``."""
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def format_table(results: List[tuple], title: str) -> str:
    """A markdown table: label, config, top-1 (%), the teacher's top-1 in the run, time."""
    header = ('method', 'config', 'top-1 (%)', 'teacher in run (%)', 'time (s)')
    lines = [header]
    for row, metrics, seconds in results:
        teacher = metrics.get(f'teacher.{METRIC}')
        lines.append((row.label, row.config, f'{metrics[METRIC]:.2f}',
                      '' if teacher is None else f'{teacher:.2f}', f'{seconds:.0f}'))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = [False, False, True, True, True]

    def render(cells):
        return '| ' + ' | '.join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric)) + ' |'

    rule = '|' + '|'.join('-' * (w + 1) + (':' if num else '-')
                          for w, num in zip(widths, numeric)) + '|'
    return '\n'.join([title, render(lines[0]), rule, *map(render, lines[1:])])


def main():
    args = parse_args()
    work_root = osp.abspath(args.work_dir)
    options = list(SMOKE_OPTIONS) if args.smoke else []
    start = time.time()
    results, teacher_ckpt = [], None
    for i, row in enumerate(ROWS):
        work_dir = osp.join(work_root, osp.splitext(osp.basename(row.config))[0])
        row_options = list(options)
        if i > 0 and is_distillation(row.config):
            row_options.append(f'model.teacher_ckpt={teacher_ckpt}')
        row_start = time.time()
        metrics = run_row(row, work_dir, row_options)
        results.append((row, metrics, time.time() - row_start))
        if i == 0:
            teacher_ckpt = last_checkpoint(work_dir)
    title = ('Smoke run (1 epoch, data subsets): top-1 accuracy on 64 test images'
             if args.smoke else
             'Top-1 accuracy on the digits test split (364 images) after the last epoch')
    print('\n' + format_table(results, title))
    print(f'Total wall time: {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
