"""The crd_mm demo (`make demo`): distillation on scikit-learn's digits, on CPU.

Trains, one after the other and each through ``tools/train.py`` (the command
users run), every row of :data:`ROWS`: first the teacher, then the student
alone and the student distilled from that teacher by each method, a second
teacher (WRN-16-2) and the student distilled from both teachers at once
(ensemble), then the cross-modal rows (the student alone on a 4x4 view of the
digits, and distilled from the teacher that sees them at 16x16). The
distillation rows load their teachers' last checkpoints (``--cfg-options
model.teacher_ckpt=...``, ``model.teachers.<name>.ckpt=...``). Each run logs
its progress as usual. Then every
row's network is judged by a linear probe (``tools/analysis/linear_probe.py``:
a linear classifier trained on its frozen features) on a task none of them
was trained on, the digits rotated by 90 degrees. At the end a table gives
every row's top-1 accuracy on the test split, read from the last validation
in the run's json log, and its linear-probe top-1.

Usage::

    python tools/demo.py [--work-dir work_dirs/demo] [--smoke]

``--smoke`` trains one epoch on a small subset (a quick end-to-end check) and
probes only the last row of each probe task, for one epoch on a subset.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import List, NamedTuple, Tuple

from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
METRIC = 'accuracy/top1'


# The linear-probe task: the digits rotated by 90 degrees, at the view each
# network was trained on (16x16, or 4x4 for the cross-modal students).
PROBE = 'configs/demo/_probe_rotated_digits.py'
PROBE_4PX = 'configs/demo/_probe_rotated_digits_4px.py'


class Row(NamedTuple):
    """One line of the results table.

    ``label`` and ``config`` name it, ``probe`` is its linear-probe task, and
    ``teachers`` pairs ``--cfg-options`` keys with the configs of earlier rows
    whose last checkpoints they get; by default a config with
    ``model.teacher_ckpt`` gets the first row's (the teacher's).
    """
    label: str
    config: str
    probe: str = PROBE
    teachers: Tuple[Tuple[str, str], ...] = ()


TEACHER = 'configs/demo/teacher.py'
SECOND_TEACHER = 'configs/demo/teacher_wrn.py'

# The first row trains the teacher that the single-teacher distillation rows load.
ROWS = [
    Row('teacher: resnet20', TEACHER),
    Row('student alone: resnet8', 'configs/demo/student.py'),
    Row('student + KD', 'configs/demo/kd.py'),
    Row('student + CRD + KD', 'configs/demo/crd_kd.py'),
    Row('student + DCD + KD', 'configs/demo/dcd_kd.py'),
    Row('student + CRCD + KD', 'configs/demo/crcd_kd.py'),
    Row('student + CKD', 'configs/demo/ckd.py'),
    Row('second teacher: WRN-16-2', SECOND_TEACHER),
    Row('student + ensemble (resnet20, WRN-16-2): CRD each + KD', 'configs/demo/ensemble.py',
        teachers=(('model.teachers.resnet20.ckpt', TEACHER), ('model.teachers.wrn_16_2.ckpt', SECOND_TEACHER))),
    Row('4x4 student alone: resnet8', 'configs/demo/crossmodal_student.py', PROBE_4PX),
    Row('4x4 student + CRD from 16x16 teacher', 'configs/demo/crossmodal.py', PROBE_4PX),
]

# One epoch on the first 96 training and 64 test images.
SMOKE_OPTIONS = [
    'train_cfg.max_epochs=1',
    'train_cfg.val_interval=1',
    'train_dataloader.dataset.indices=96',
    'val_dataloader.dataset.indices=64',
]
# Epochs of the linear probe's head (SGD lr 0.1, cosine), and the smoke run's probe.
PROBE_EPOCHS = 10
SMOKE_PROBE_OPTIONS = ['train_dataloader.dataset.indices=96', 'test_dataloader.dataset.indices=64']


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


def run_tool(label: str, tool: str, args: List[str]) -> None:
    """Run one of the repository's tools in a subprocess, as a user would; stop the demo if it fails."""
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', tool), *args]
    print(f'\n[demo] {label}: {" ".join(cmd[1:])}', flush=True)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    # These networks are too small to gain from intra-op threads, and on a
    # busy machine idle-spinning OpenMP threads made training ~10x slower.
    env.setdefault('OMP_NUM_THREADS', '1')
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f'[demo] {label}: tools/{tool} exited with {result.returncode}')


def run_row(row: Row, work_dir: str, options: List[str]) -> dict:
    """Train one row with tools/train.py; return the last validation's metrics."""
    before = set(os.listdir(work_dir)) if osp.isdir(work_dir) else set()
    args = [row.config, '--work-dir', work_dir]
    if options:
        args += ['--cfg-options', *options]
    run_tool(row.label, 'train.py', args)
    new_runs = sorted(d for d in set(os.listdir(work_dir)) - before
                      if osp.isdir(osp.join(work_dir, d)))
    if not new_runs:
        sys.exit(f'[demo] {row.label}: no new run directory in {work_dir}')
    return last_validation(osp.join(work_dir, new_runs[-1]))


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine's CheckpointHook saved last in ``work_dir``."""
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def run_probe(row: Row, checkpoint: str, work_dir: str, smoke: bool) -> float:
    """The linear probe of a row's trained network on its probe task; its top-1."""
    args = [row.config, checkpoint, '--dataset-config', row.probe, '--work-dir', work_dir,
            '--epochs', '1' if smoke else str(PROBE_EPOCHS)]
    if smoke:
        args += ['--cfg-options', *SMOKE_PROBE_OPTIONS]
    run_tool(f'linear probe of {row.label}', osp.join('analysis', 'linear_probe.py'), args)
    with open(osp.join(work_dir, 'linear_probe.json')) as f:
        return json.load(f)[METRIC]


def format_table(results: List[tuple], title: str) -> str:
    """A markdown table: label, config, top-1 (%), the teacher's top-1 in the run, probe, time."""
    header = ('method', 'config', 'top-1 (%)', 'teacher in run (%)', 'linear probe (%)', 'time (s)')
    lines = [header]
    for row, metrics, probe, seconds in results:
        teacher = metrics.get(f'teacher.{METRIC}')
        lines.append((row.label, row.config, f'{metrics[METRIC]:.2f}',
                      '' if teacher is None else f'{teacher:.2f}', '' if probe is None else f'{probe:.2f}',
                      f'{seconds:.0f}'))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = [False, False, True, True, True, True]

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
    trained, checkpoints = [], {}
    for row in ROWS:
        work_dir = osp.join(work_root, osp.splitext(osp.basename(row.config))[0])
        teachers = row.teachers or (
            (('model.teacher_ckpt', ROWS[0].config), ) if is_distillation(row.config) else ())
        row_options = list(options)
        row_options += [f'{key}={checkpoints[config]}' for key, config in teachers]
        row_start = time.time()
        metrics = run_row(row, work_dir, row_options)
        checkpoints[row.config] = last_checkpoint(work_dir)
        trained.append((row, metrics, checkpoints[row.config], time.time() - row_start))
    # the smoke run probes only the last row of each probe task (a distiller's student)
    probed = {row.probe: row for row, *_ in trained} if args.smoke else None
    results = []
    for row, metrics, checkpoint, seconds in trained:
        probe_dir = osp.join(work_root, 'linear_probe', osp.splitext(osp.basename(row.config))[0])
        probe = None
        if probed is None or probed[row.probe] is row:
            probe = run_probe(row, checkpoint, probe_dir, args.smoke)
        results.append((row, metrics, probe, seconds))
    title = ('Smoke run (1 epoch, data subsets): top-1 accuracy on 64 test images'
             if args.smoke else
             'Top-1 accuracy on the digits test split (364 images) after the last epoch')
    print('\n' + format_table(results, title))
    probe_epochs = 1 if args.smoke else PROBE_EPOCHS
    print(f'linear probe: top-1 of a linear classifier trained for {probe_epochs} epoch(s) on the '
          'frozen features of each row\'s network, on the digits rotated by 90 degrees '
          f'({PROBE}; {PROBE_4PX} for the 4x4 students); time: training only')
    print(f'Total wall time: {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
