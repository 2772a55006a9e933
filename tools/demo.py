"""The crd_mm demo (`make demo`): does distillation help? Digits, on CPU, several seeds.

A teacher (resnet20) learns from all 1,433 training digits of scikit-learn's
bundled set; a 3.5x smaller student (resnet8) learns from a small labelled
fraction, 10 images per class (``configs/demo/_base_digits.py``). Each row of
:data:`ROWS` is trained once per seed: first that seed's teacher, then the
student alone and the student distilled from that teacher by each method
(the distillation rows load the teacher of their own seed through
``model.teacher_ckpt``). Runs are built from their configs by mmengine's
``Runner``, as ``tools/train.py`` does, several at once in worker processes
(``--jobs``); each run writes its usual log, json scalars and checkpoint under
``<work-dir>/seed<k>/<config name>/``, and the demo prints the equivalent
``tools/train.py`` command of every run. At the end a table gives each row's
top-1 accuracy on the test split (the last validation of each run), mean +-
standard deviation over the seeds, and a bar chart of it is written next to
the runs (``results.png``). Last, the first seed's CRD+KD student is exported
(``tools/model_converters/convert_to_student.py``) into ``<work-dir>/student``
and classifies a few test digits through mmpretrain's
``ImageClassificationInferencer``: the deliverable of distillation.

``--frontier`` runs CRD's two other jobs instead (one seed by default): a
second teacher (WRN-16-2) and the student distilled from both teachers at once
(ensemble), and cross-modal transfer (the student alone on a 4x4 view of the
digits, and distilled from the teacher that sees them at 16x16); then every
network is judged by a linear probe (``tools/analysis/linear_probe.py``) on a
task none of them was trained on, the digits rotated by 90 degrees.

Usage::

    python tools/demo.py [--work-dir work_dirs/demo] [--seeds 0 1 2] [--jobs N]
                         [--smoke] [--frontier | --segmentation]

``--segmentation`` runs the segmentation rows instead (seeds 0 1 2): a PSPNet
teacher and a narrower student on bundled synthetic shapes
(``configs/demo/segmentation/``), the student alone and distilled by CWD,
CWD + PixelCRD and CWD + CIRKD, judged by mIoU.

``--smoke`` trains one epoch on a small subset (a quick end-to-end check).
"""

import argparse
import json
import math
import multiprocessing
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
METRIC = 'accuracy/top1'

# The linear-probe task of --frontier: the digits rotated by 90 degrees, at
# the view each network was trained on (16x16, or 4x4 for the cross-modal students).
PROBE = 'configs/demo/_probe_rotated_digits.py'
PROBE_4PX = 'configs/demo/_probe_rotated_digits_4px.py'


class Row(NamedTuple):
    """One line of a results table.

    ``label`` and ``config`` name it, ``probe`` is its linear-probe task
    (--frontier), and ``teachers`` pairs config keys with the configs of
    earlier rows whose last checkpoints (of the same seed) they get; by
    default a config with ``model.teacher_ckpt`` gets the teacher row's.
    ``baseline`` is the row it is compared with: the student trained alone
    on the same view. ``metric`` is the validation metric it is judged by.
    """

    label: str
    config: str
    probe: str = PROBE
    teachers: Tuple[Tuple[str, str], ...] = ()
    baseline: str = 'configs/demo/student.py'
    metric: str = METRIC


class Run(NamedTuple):
    """What one training run left: its last validation, checkpoint and wall time, and the first
    epoch whose logged training loss was not finite (None: it never diverged). A run that the
    configs' StopOnNonFiniteLossHook stopped has a NaN top-1 and no checkpoint ('')."""

    metrics: dict
    checkpoint: str
    seconds: float
    diverged_at: Optional[int] = None


TEACHER = 'configs/demo/teacher.py'
SECOND_TEACHER = 'configs/demo/teacher_wrn.py'
STUDENT = 'configs/demo/student.py'

ROWS = [
    Row('teacher: resnet20 (all 1,433 images)', TEACHER),
    Row('student alone: resnet8 (10 per class)', STUDENT),
    Row('student + KD', 'configs/demo/kd.py'),
    Row('student + CRD', 'configs/demo/crd.py'),
    Row('student + CRD + KD', 'configs/demo/crd_kd.py'),
    Row('student + DCD + KD', 'configs/demo/dcd_kd.py'),
    Row('student + CRCD + KD', 'configs/demo/crcd_kd.py'),
    Row('student + CKD', 'configs/demo/ckd.py'),
]

FRONTIER_ROWS = [
    ROWS[0],
    ROWS[1],
    Row('student + CRD + KD', 'configs/demo/crd_kd.py'),
    Row('second teacher: WRN-16-2 (all 1,433 images)', SECOND_TEACHER),
    Row(
        'student + ensemble (resnet20, WRN-16-2): CRD each + KD',
        'configs/demo/ensemble.py',
        teachers=(
            ('model.teachers.resnet20.ckpt', TEACHER),
            ('model.teachers.wrn_16_2.ckpt', SECOND_TEACHER),
        ),
    ),
    Row(
        '4x4 student alone: resnet8',
        'configs/demo/crossmodal_student.py',
        PROBE_4PX,
        baseline='configs/demo/crossmodal_student.py',
    ),
    Row(
        '4x4 student + CRD from 16x16 teacher',
        'configs/demo/crossmodal.py',
        PROBE_4PX,
        baseline='configs/demo/crossmodal_student.py',
    ),
]

# --segmentation: PSPNet students on bundled synthetic shapes (configs/demo/segmentation/),
# judged by mIoU; every distillation row loads the teacher of its own seed.
SEG_TEACHER = 'configs/demo/segmentation/teacher.py'
SEG_STUDENT = 'configs/demo/segmentation/student.py'
SEG_METRIC = 'mIoU'
SEG_ROWS = [
    Row('teacher: PSPNet ResNetV1c-18, width 16', SEG_TEACHER, metric=SEG_METRIC),
    Row('student alone: width 8', SEG_STUDENT, baseline=SEG_STUDENT, metric=SEG_METRIC),
    *(
        Row(
            label,
            f'configs/demo/segmentation/{name}.py',
            teachers=(('model.teacher_ckpt', SEG_TEACHER),),
            baseline=SEG_STUDENT,
            metric=SEG_METRIC,
        )
        for label, name in (
            ('student + CWD', 'cwd'),
            ('student + CWD + PixelCRD', 'cwd_pixel_crd'),
            ('student + CWD + CIRKD', 'cwd_cirkd'),
        )
    ),
]
TEACHER_ROWS = (TEACHER, SECOND_TEACHER, SEG_TEACHER)

# One epoch on the first 96 training and 64 test images.
SMOKE_OPTIONS = {
    'train_cfg.max_epochs': 1,
    'train_cfg.val_interval': 1,
    'train_dataloader.dataset.indices': 96,
    'val_dataloader.dataset.indices': 64,
}
# --segmentation --smoke: 4 iterations on 16 training and 8 validation images.
SEG_SMOKE_OPTIONS = {
    'train_cfg.max_iters': 4,
    'train_cfg.val_interval': 4,
    'param_scheduler.end': 4,
    'train_dataloader.dataset.num_images': 16,
    'val_dataloader.dataset.num_images': 8,
}
# Epochs of the linear probe's head (SGD lr 0.1, cosine), and the smoke run's probe.
PROBE_EPOCHS = 10
SMOKE_PROBE_OPTIONS = ['train_dataloader.dataset.indices=96', 'test_dataloader.dataset.indices=64']


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--work-dir',
        default=osp.join('work_dirs', 'demo'),
        help="parent of the runs' work directories (<work-dir>/seed<k>/<config name>)",
    )
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=None,
        help='random seeds, one run of every row each (default: 0 1 2; 0 with --frontier)',
    )
    parser.add_argument(
        '--jobs',
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help='runs trained at once, one worker process each (default: the CPU count, at most 8)',
    )
    parser.add_argument(
        '--smoke',
        action='store_true',
        help='train one epoch on a small subset (a quick end-to-end check)',
    )
    parser.add_argument(
        '--frontier',
        action='store_true',
        help='ensemble and cross-modal rows with linear probes instead of the main table',
    )
    parser.add_argument(
        '--segmentation',
        action='store_true',
        help='semantic segmentation rows (student alone, CWD, CWD + PixelCRD, CWD + CIRKD) '
        'on synthetic shapes, judged by mIoU, instead of the main table',
    )
    return parser.parse_args()


def is_distillation(config: str) -> bool:
    """Whether the config is a distiller that loads one teacher checkpoint."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, config), import_custom_modules=False)
    return 'teacher_ckpt' in cfg.model


def row_teachers(row: Row) -> Tuple[Tuple[str, str], ...]:
    """The config keys of a row that take earlier rows' checkpoints, and those rows' configs."""
    if row.teachers:
        return row.teachers
    return (('model.teacher_ckpt', TEACHER),) if is_distillation(row.config) else ()


def run_name(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


def last_validation(run_dir: str, metric: str = METRIC) -> dict:
    """The metrics of the last validation in the json log of a run's ``<timestamp>`` dir."""
    timestamp = osp.basename(run_dir)
    log_file = osp.join(run_dir, 'vis_data', f'{timestamp}.json')
    last = None
    with open(log_file) as f:
        for line in f:
            record = json.loads(line)
            if metric in record:
                last = record
    if last is None:
        raise RuntimeError(f'{log_file} holds no {metric!r}: the run never validated')
    return last


def first_non_finite_loss(run_dir: str) -> Optional[int]:
    """The first epoch whose logged training ``loss`` is NaN or infinite in a run's json log."""
    timestamp = osp.basename(run_dir)
    with open(osp.join(run_dir, 'vis_data', f'{timestamp}.json')) as f:
        for line in f:
            record = json.loads(line)
            if 'loss' in record and not math.isfinite(record['loss']):
                return record.get('epoch', record.get('iter'))
    return None


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine's CheckpointHook saved last in ``work_dir``."""
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def train_command(config: str, work_dir: str, seed: int, options: dict) -> str:
    """The ``tools/train.py`` command that trains the same run."""
    cfg_options = [f'{key}={value}' for key, value in options.items()] + [f'randomness.seed={seed}']
    return shlex.join(
        ['python', 'tools/train.py', config, '--work-dir', work_dir, '--cfg-options', *cfg_options]
    )


def quiet_worker() -> None:
    """Worker set-up: each run's own log file keeps mmengine's output; the console stays clear."""
    import warnings

    import torch

    torch.set_num_threads(1)
    # each run's env_cfg sets the 'fork' start method for its own data workers (none here); not news
    warnings.filterwarnings('ignore', message='Multi-processing start method')
    sys.stdout = open(os.devnull, 'w')


def train(config: str, work_dir: str, seed: int, options: dict, metric: str = METRIC) -> Run:
    """Train one run in this (worker) process, as tools/train.py would, and read back its result."""
    from mmengine.runner import Runner

    import crd_mm  # noqa: F401  (registers crd_mm's modules, as the configs' custom_imports do)
    from crd_mm.engine import NonFiniteLossError

    start = time.time()
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    cfg.merge_from_dict(options)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed, deterministic=False)
    # runs that share a process need their own logger and message hub, which mmengine keys by
    # this name
    cfg.experiment_name = f'{run_name(config)}_seed{seed}'
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
    except NonFiniteLossError as error:  # the configs' StopOnNonFiniteLossHook stopped it
        return Run({metric: math.nan}, '', time.time() - start, error.epoch)
    run_dir = osp.join(work_dir, runner.timestamp)
    return Run(
        last_validation(run_dir, metric),
        last_checkpoint(work_dir),
        time.time() - start,
        first_non_finite_loss(run_dir),
    )


def train_rows(
    rows: Sequence[Row], seeds: Sequence[int], work_root: str, options: dict, jobs: int
) -> Dict[Tuple[str, int], Run]:
    """Train every row once per seed, ``jobs`` at once; a row starts when its teachers are done."""
    results: Dict[Tuple[str, int], Run] = {}
    # row by row: every seed's teacher starts first, so the rows that need it are ready early
    pending = [(row, seed) for row in rows for seed in seeds]
    teachers_of = {
        row.config: row_teachers(row) for row in rows
    }  # parsed once: configs take a while
    context = multiprocessing.get_context('spawn')
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=quiet_worker) as pool:
        running = {}
        while pending or running:
            for row, seed in list(pending):
                teachers = teachers_of[row.config]
                if all((config, seed) in results for _, config in teachers):
                    pending.remove((row, seed))
                    run_options = dict(options)
                    run_options.update(
                        {key: results[config, seed].checkpoint for key, config in teachers}
                    )
                    work_dir = osp.join(work_root, f'seed{seed}', run_name(row.config))
                    print(
                        f'[demo] seed {seed}, {row.label}: '
                        f'{train_command(row.config, work_dir, seed, run_options)}',
                        flush=True,
                    )
                    future = pool.submit(train, row.config, work_dir, seed, run_options, row.metric)
                    running[future] = (row, seed, work_dir)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                row, seed, work_dir = running.pop(future)
                try:
                    run = future.result()
                except Exception as error:
                    pool.shutdown(cancel_futures=True)
                    sys.exit(
                        f'[demo] seed {seed}, {row.label} failed: {error!r}; '
                        f'its log is under {work_dir}'
                    )
                results[row.config, seed] = run
                if not run.checkpoint:  # stopped: no result, nor a teacher for later rows
                    pool.shutdown(cancel_futures=True)
                    sys.exit(
                        f'[demo] seed {seed}, {row.label}: training diverged (a NaN or infinite '
                        f'loss in epoch {run.diverged_at}) and was stopped; its log is under '
                        f'{work_dir}'
                    )
                diverged = (
                    ''
                    if run.diverged_at is None
                    else f', DIVERGED: NaN/inf loss from epoch {run.diverged_at}'
                )
                print(
                    f'[demo] seed {seed}, {row.label}: {metric_name(row.metric)} '
                    f'{run.metrics[row.metric]:.2f} '
                    f'({run.seconds:.0f} s{diverged})',
                    flush=True,
                )
    return results


def tool_env() -> dict:
    """The environment of the repository's tools run as subprocesses: this checkout first on
    PYTHONPATH."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    return env


def run_probe(row: Row, checkpoint: str, work_dir: str, smoke: bool) -> float:
    """The linear probe of a row's trained network on its probe task; its top-1."""
    cmd = [
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'analysis', 'linear_probe.py'),
        row.config,
        checkpoint,
        '--dataset-config',
        row.probe,
        '--work-dir',
        work_dir,
        '--epochs',
        '1' if smoke else str(PROBE_EPOCHS),
    ]
    if smoke:
        cmd += ['--cfg-options', *SMOKE_PROBE_OPTIONS]
    print(f'\n[demo] linear probe of {row.label}: {" ".join(cmd[1:])}', flush=True)
    if subprocess.run(cmd, cwd=REPO_ROOT, env=tool_env()).returncode != 0:
        sys.exit(f'[demo] linear probe of {row.label} failed')
    with open(osp.join(work_dir, 'linear_probe.json')) as f:
        return json.load(f)[METRIC]


def picture_commands(
    results: Dict[Tuple[str, int], Run], seed: int, work_root: str
) -> Dict[str, List[str]]:
    """The tools/analysis commands that draw one seed's runs: logit correlations, t-SNE, curves."""

    def run_args(config):
        return [config, results[config, seed].checkpoint]

    students = [
        (STUDENT, 'student alone'),
        ('configs/demo/kd.py', 'KD'),
        ('configs/demo/crd.py', 'CRD'),
        ('configs/demo/crd_kd.py', 'CRD+KD'),
    ]
    curves = ROWS[1:]
    return {
        'logit_correlation.png': [
            'logit_correlation.py',
            *run_args(TEACHER),
            *[a for c, _ in students for a in run_args(c)],
            '--titles',
            *[title for _, title in students],
        ],
        'tsne.png': [
            'embedding_tsne.py',
            *[a for c, _ in students for a in run_args(c)],
            '--titles',
            *[title for _, title in students],
        ],
        'curves.png': [
            'plot_curves.py',
            *[osp.join(work_root, f'seed{seed}', run_name(row.config)) for row in curves],
            '--keys',
            'student.loss|loss',
            METRIC,
            '--legend',
            *[run_name(row.config) for row in curves],
        ],
    }


def draw_pictures(commands: Dict[str, List[str]], work_root: str) -> None:
    """Run the picture tools at once, each logging to ``<work_root>/<picture>.log``.

    Reports what they wrote.
    """
    running = []
    for picture, (tool, *args) in commands.items():
        out = osp.join(work_root, picture)
        cmd = [osp.join('tools', 'analysis', tool), *args, '--out', out]
        log = open(osp.splitext(out)[0] + '.log', 'w')
        running.append(
            (
                out,
                cmd,
                log,
                subprocess.Popen(
                    [sys.executable, *cmd],
                    cwd=REPO_ROOT,
                    env=tool_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
            )
        )
    print("\nPictures of the first seed's runs (tools/analysis/, see docs/analysis.md):")
    for out, cmd, log, process in running:
        status = 'written' if process.wait() == 0 else f'FAILED, see {log.name}'
        log.close()
        print(f'  {out} ({status}):\n    {shlex.join(["python", *cmd])}')


def metric_name(metric: str) -> str:
    """How tables and charts name a validation metric."""
    return 'top-1' if metric == METRIC else metric


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_table(
    rows: Sequence[Row],
    seeds: Sequence[int],
    results: Dict[Tuple[str, int], Run],
    title: str,
    probes: Optional[Dict[Tuple[str, int], float]] = None,
) -> str:
    """A markdown table: label, config, top-1 mean +- std, per seed, gain over the row's baseline,
    probe, time."""

    metric = rows[0].metric

    def mean_top1(config):
        return mean_std([results[config, s].metrics[metric] for s in seeds])[0]

    header = [
        'method',
        'config',
        f'{metric_name(metric)} (%) mean +- std',
        'per seed',
        'vs student alone',
    ]
    if probes is not None:
        header.append('linear probe (%)')
    header.append('time per run (s)')
    lines = [header]
    for row in rows:
        runs = [results[row.config, s] for s in seeds]
        top1 = [run.metrics[metric] for run in runs]
        mean, std = mean_std(top1)
        per_seed = [
            f'{v:.2f}'
            if run.diverged_at is None
            else f'{v:.2f} (diverged at epoch {run.diverged_at})'
            for v, run in zip(top1, runs)
        ]
        cells = [
            row.label,
            row.config,
            f'{mean:.2f} +- {std:.2f}',
            ' / '.join(per_seed),
            ''
            if row.config in (row.baseline, *TEACHER_ROWS)
            else f'{mean - mean_top1(row.baseline):+.2f}',
        ]
        if probes is not None:
            cells.append(' / '.join(f'{probes[row.config, s]:.2f}' for s in seeds))
        cells.append(f'{statistics.mean(results[row.config, s].seconds for s in seeds):.0f}')
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = [False, False] + [True] * (len(header) - 2)

    def render(cells):
        return (
            '| '
            + ' | '.join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)
            )
            + ' |'
        )

    rule = (
        '|'
        + '|'.join('-' * (w + 1) + (':' if num else '-') for w, num in zip(widths, numeric))
        + '|'
    )
    return '\n'.join([title, render(lines[0]), rule, *map(render, lines[1:])])


def plot_results(
    rows: Sequence[Row],
    seeds: Sequence[int],
    results: Dict[Tuple[str, int], Run],
    title: str,
    path: str,
) -> None:
    """A bar chart of each row's mean top-1 with its standard deviation over the seeds."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metric = rows[0].metric
    stats = [mean_std([results[row.config, s].metrics[metric] for s in seeds]) for row in rows]
    means, stds = [m for m, _ in stats], [s for _, s in stats]
    colours = [
        'tab:gray'
        if row.config in TEACHER_ROWS
        else 'tab:red'
        if row.config == row.baseline
        else 'tab:blue'
        for row in rows
    ]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    bars = ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=colours)
    ax.bar_label(bars, labels=[f'{m:.1f}' for m in means], padding=3)
    baseline = means[[row.config for row in rows].index(rows[1].baseline)]
    ax.axhline(baseline, color='tab:red', linestyle='--', linewidth=1)
    ax.text(
        len(rows) - 0.5,
        baseline,
        'student alone',
        color='tab:red',
        ha='right',
        va='bottom',
        fontsize=8,
    )
    ax.set_xticks(
        range(len(rows)),
        [row.label.replace(' (', '\n(') for row in rows],
        rotation=30,
        ha='right',
        fontsize=8,
    )
    ax.set_ylabel(f'{metric_name(metric)} (%)')
    ax.set_ylim(max(0.0, min(means) - 15), 100)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# The deliverable: seed 0's CRD+KD student, exported and reloaded as a user would.
EXPORT_CONFIG = 'configs/demo/crd_kd.py'
EXPORT_NAME = 'crd_kd_student'
NUM_EXAMPLES = 8


def display_path(path: str) -> str:
    """``path`` relative to the current directory when it lies below it, else as given."""
    relative = osp.relpath(path)
    return path if relative.startswith('..') else relative


def export_commands(run_dir: str, checkpoint: str, out_dir: str, image: str) -> Tuple[str, str]:
    """The convert command and the 3-line Python inference snippet a user types for this run."""
    config = display_path(osp.join(run_dir, osp.basename(EXPORT_CONFIG)))
    out = display_path(out_dir)
    convert = shlex.join(
        [
            'python',
            'tools/model_converters/convert_to_student.py',
            config,
            display_path(checkpoint),
            out,
            '--name',
            EXPORT_NAME,
        ]
    )
    student = osp.join(out, EXPORT_NAME)
    snippet = '\n'.join(
        [
            'from mmpretrain import ImageClassificationInferencer',
            f"inferencer = ImageClassificationInferencer('{student}.py', "
            f"pretrained='{student}.pth', device='cpu')",
            f"print(inferencer('{display_path(image)}')[0]['pred_class'])",
        ]
    )
    return convert, snippet


def export_and_predict(
    run_dir: str, checkpoint: str, out_dir: str, num_examples: int = NUM_EXAMPLES
) -> List[Tuple[str, int, dict]]:
    """Export a CRD+KD run's student with the convert tool, then predict test digits with it.

    The student's config and checkpoint go to ``out_dir`` through
    ``tools/model_converters/convert_to_student.py`` (the run's dumped
    config, as a user would convert it); the first ``num_examples`` test
    digits are written there as PNGs and classified by mmpretrain's
    ``ImageClassificationInferencer`` loaded from the exported pair. Prints
    both commands and every digit's label next to its prediction; returns
    (image, label, inferencer result) per digit.
    """
    import cv2

    import crd_mm  # noqa: F401  (registers SklearnDigits)
    from crd_mm.datasets import SklearnDigits

    digits_dir = osp.join(out_dir, 'digits')
    os.makedirs(digits_dir, exist_ok=True)
    test_split = SklearnDigits(split='test', pipeline=[])
    images, labels = [], []
    for i in range(num_examples):
        info = test_split.get_data_info(i)
        images.append(osp.join(digits_dir, f'test_{i}.png'))
        labels.append(int(info['gt_label']))
        cv2.imwrite(images[-1], info['img'])
    convert, snippet = export_commands(run_dir, checkpoint, out_dir, images[0])
    print(
        f'\n[demo] The deliverable: the CRD+KD student of {display_path(run_dir)} as a '
        'standalone model. Export it:'
    )
    print(f'  {convert}')
    tool = [
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'model_converters', 'convert_to_student.py'),
        osp.join(run_dir, osp.basename(EXPORT_CONFIG)),
        checkpoint,
        out_dir,
        '--name',
        EXPORT_NAME,
    ]
    done = subprocess.run(tool, cwd=os.getcwd(), env=tool_env(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f'[demo] exporting the student failed:\n{done.stdout}{done.stderr}')
    print('Load it with mmpretrain and classify an image (3 lines of Python):')
    print('\n'.join(f'  {line}' for line in snippet.splitlines()))
    from mmengine.registry import DefaultScope
    from mmpretrain import ImageClassificationInferencer

    student = osp.join(out_dir, EXPORT_NAME)
    # mmpretrain's scope, as in the user's fresh process (a Runner of this process sets its own)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(
            f'{student}.py', pretrained=f'{student}.pth', device='cpu'
        )
        results = inferencer(images)
    print()  # after the inferencer's progress bar
    print(f'Its predictions for the first {num_examples} test digits:')
    width = max(len(display_path(image)) for image in images)
    print(f'  {"image":<{width}}  label  predicted  score')
    for image, label, result in zip(images, labels, results):
        print(
            f'  {display_path(image):<{width}}  {label:>5}  {result["pred_class"]:>9}  '
            f'{result["pred_score"]:.2f}'
        )
    return list(zip(images, labels, results))


def main():
    args = parse_args()
    work_root = osp.abspath(args.work_dir)
    rows = FRONTIER_ROWS if args.frontier else SEG_ROWS if args.segmentation else ROWS
    seeds = args.seeds if args.seeds is not None else ([0] if args.frontier else [0, 1, 2])
    options = dict(SMOKE_OPTIONS) if args.smoke else {}
    if args.segmentation:
        options = dict(SEG_SMOKE_OPTIONS) if args.smoke else {}
    # these networks are too small to gain from intra-op threads; spinning
    # OpenMP threads made training ~10x slower on a busy machine
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    start = time.time()
    results = train_rows(rows, seeds, work_root, options, max(1, args.jobs))

    seed_text = ', '.join(map(str, seeds))
    if args.segmentation:
        title = (
            f'mIoU on the synthetic shapes validation split after the last iteration'
            f'{" (smoke run: 4 iterations)" if args.smoke else ""}, seeds {seed_text}'
        )
    elif args.smoke:
        title = f'Smoke run (1 epoch, data subsets): top-1 on 64 test images, seeds {seed_text}'
    else:
        title = (
            'Top-1 accuracy on the digits test split (364 images) after the last epoch, '
            f'seeds {seed_text}'
        )
    probes = None
    if args.frontier:
        probes = {}
        for row in rows:
            for seed in seeds:
                probe_dir = osp.join(work_root, f'seed{seed}', 'linear_probe', run_name(row.config))
                probes[row.config, seed] = run_probe(
                    row, results[row.config, seed].checkpoint, probe_dir, args.smoke
                )
    print('\n' + format_table(rows, seeds, results, title, probes))
    print(
        'mean +- sample standard deviation over the seeds; "vs student alone": difference of the '
        'means (points) from the student trained alone on the same view; time: wall time of a '
        'training run (runs train in parallel)'
    )
    if probes is not None:
        print(
            'linear probe: top-1 of a linear classifier trained for '
            f'{1 if args.smoke else PROBE_EPOCHS} '
            'epoch(s) on the frozen features of each network, on the digits rotated by 90 degrees '
            f'({PROBE}; {PROBE_4PX} for the 4x4 students), per seed'
        )
    chart = osp.join(
        work_root,
        'frontier.png'
        if args.frontier
        else 'segmentation.png'
        if args.segmentation
        else 'results.png',
    )
    plot_results(rows, seeds, results, title, chart)
    print(f'Bar chart: {chart}')
    if not (args.frontier or args.segmentation):
        draw_pictures(picture_commands(results, seeds[0], work_root), work_root)
        deliverable = results[EXPORT_CONFIG, seeds[0]]
        if deliverable.checkpoint and deliverable.diverged_at is None:
            export_and_predict(
                osp.join(work_root, f'seed{seeds[0]}', run_name(EXPORT_CONFIG)),
                deliverable.checkpoint,
                osp.join(work_root, 'student'),
            )
    print(f'Total wall time: {time.time() - start:.0f} s')
    diverged = [
        (row.label, seed) for row in rows for seed in seeds if results[row.config, seed].diverged_at
    ]
    if diverged:
        sys.exit(
            '[demo] training diverged (a NaN or infinite loss) in: '
            + '; '.join(f'{label}, seed {seed}' for label, seed in diverged)
            + ': their accuracies above are not results; see their logs'
        )


if __name__ == '__main__':
    main()
