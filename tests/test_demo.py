"""`make demo` (tools/demo.py) and its configs in configs/demo/."""

import glob
import importlib.util
import json
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

import crd_mm  # noqa: F401  (registers crd_mm's modules and mmrazor's)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = sorted(
    osp.relpath(p, REPO_ROOT)
    for p in glob.glob(osp.join(REPO_ROOT, 'configs', 'demo', '*.py'))
    if not osp.basename(p).startswith('_')
)


def load_demo():
    spec = importlib.util.spec_from_file_location('demo', osp.join(REPO_ROOT, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('config', DEMO_CONFIGS)
def test_demo_config_parses_and_builds(config):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    distill = 'teacher_ckpt' in cfg.model
    if distill:
        cfg.model.teacher_ckpt = None
    for teacher in cfg.model.get('teachers', {}).values():  # MultiTeacherDistill (ensemble.py)
        teacher.ckpt = None
    model = MODELS.build(cfg.model)
    assert cfg.train_dataloader.dataset.type == 'SklearnDigits'
    assert cfg.val_dataloader.dataset.split == 'test'
    if distill:
        # the student is clearly smaller than the teacher
        assert num_params(model.teacher) > 3 * num_params(model.student)
        assert cfg.val_cfg.type.endswith(
            ('SingleTeacherDistillValLoop', 'CrossModalDistillValLoop')
        )
        assert len(model.distiller.distill_losses) >= 1


def test_rows_cover_every_demo_config_and_the_teacher_comes_first():
    demo = load_demo()
    covered = {row.config for row in demo.ROWS + demo.FRONTIER_ROWS}
    assert sorted(covered) == DEMO_CONFIGS
    for rows in (demo.ROWS, demo.FRONTIER_ROWS):
        assert len({row.label for row in rows}) == len(rows)
        assert rows[0].config == demo.TEACHER and not demo.is_distillation(rows[0].config)
    # the rows, in order
    assert [demo.run_name(row.config) for row in demo.ROWS] == [
        'teacher',
        'student',
        'kd',
        'crd',
        'crd_kd',
        'dcd_kd',
        'crcd_kd',
        'ckd',
    ]
    # a user training the teacher by hand (tools/train.py configs/demo/teacher.py
    # --work-dir work_dirs/demo/teacher) gets the checkpoint the distillers name
    teacher = Config.fromfile(osp.join(REPO_ROOT, demo.TEACHER))
    expected = f'work_dirs/demo/teacher/epoch_{teacher.train_cfg.max_epochs}.pth'
    for row in demo.ROWS[1:]:
        cfg = Config.fromfile(osp.join(REPO_ROOT, row.config))
        if 'teacher_ckpt' in cfg.model:
            assert cfg.model.teacher_ckpt == expected
            assert cfg.model.teacher.backbone == teacher.model.backbone


def test_students_learn_from_ten_labelled_images_per_class_and_the_teacher_from_all():
    """The regime of the demo: the same first 10 images of each class for every student row."""
    from mmengine.registry import DATASETS

    demo = load_demo()
    full = DATASETS.build(
        Config.fromfile(osp.join(REPO_ROOT, demo.TEACHER)).train_dataloader.dataset
    )
    assert len(full) == 1433
    labels = full.get_gt_labels()
    expected = np.concatenate([np.flatnonzero(labels == label)[:10] for label in range(10)])
    expected_images = sorted(full.get_data_info(int(i))['img'].tobytes() for i in expected)
    for row in demo.ROWS[1:]:
        dataset = DATASETS.build(
            Config.fromfile(osp.join(REPO_ROOT, row.config)).train_dataloader.dataset
        )
        assert len(dataset) == 100
        assert (
            sorted(dataset.get_data_info(i)['img'].tobytes() for i in range(100)) == expected_images
        )


def test_table_reports_mean_and_sample_std_over_seeds_and_the_chart_is_written(tmp_path):
    demo = load_demo()
    top1 = {
        demo.TEACHER: [99.0, 98.0, 97.0],
        demo.STUDENT: [70.0, 74.0, 72.0],
        'configs/demo/kd.py': [90.0, 91.0, 95.0],
    }
    rows = [demo.ROWS[0], demo.ROWS[1], demo.ROWS[2]]
    results = {
        (config, seed): demo.Run({demo.METRIC: value}, 'ckpt', 10.0 + seed)
        for config, values in top1.items()
        for seed, value in enumerate(values)
    }
    table = demo.format_table(rows, [0, 1, 2], results, 'title')
    cells = [[c.strip() for c in line.strip('|').split('|')] for line in table.splitlines()[3:]]
    for cell, row in zip(cells, rows):
        values = np.array(top1[row.config])
        assert cell[2] == f'{values.mean():.2f} +- {values.std(ddof=1):.2f}'
        assert cell[3] == ' / '.join(f'{v:.2f}' for v in values)
        assert cell[-1] == '11'
    assert cells[2][4] == f'{np.mean(top1["configs/demo/kd.py"]) - 72.0:+.2f}' == '+20.00'
    assert cells[0][4] == cells[1][4] == ''
    chart = tmp_path / 'results.png'
    demo.plot_results(rows, [0, 1, 2], results, 'title', str(chart))
    image = cv2.imread(str(chart))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 600


def test_a_run_whose_loss_turns_nan_is_flagged_and_marked_in_the_table(tmp_path):
    """A diverged run must not pass for a result: its epoch is recorded and the table says so."""
    demo = load_demo()
    options = {
        'train_cfg.max_epochs': 2,
        'train_cfg.val_interval': 2,
        'val_dataloader.dataset.indices': 32,
    }
    healthy = demo.train(demo.STUDENT, str(tmp_path / 'healthy'), 0, options)
    diverged = demo.train(
        demo.STUDENT, str(tmp_path / 'diverged'), 0, {**options, 'optim_wrapper.optimizer.lr': 1e30}
    )
    assert healthy.diverged_at is None
    with open(json_log(tmp_path / 'diverged')) as f:
        logged = [r for r in map(json.loads, f) if 'loss' in r]
    first_bad = next(r['epoch'] for r in logged if not np.isfinite(r['loss']))
    assert diverged.diverged_at == first_bad
    results = {(demo.STUDENT, 0): healthy, (demo.TEACHER, 0): diverged}
    table = demo.format_table([demo.ROWS[0], demo.ROWS[1]], [0], results, 'title')
    assert f'(diverged at epoch {first_bad})' in table.splitlines()[3]
    assert 'diverged' not in table.splitlines()[4]


def table_rows(out, title):
    table = out[out.index(title) :].splitlines()
    return [
        [c.strip() for c in line.strip('|').split('|')]
        for line in table[3:]
        if line.startswith('| ')
    ]


def json_log(work_dir):
    """The json log of the one run in ``work_dir``: ``<timestamp>/vis_data/<timestamp>.json``
    (beside it, mmengine's LocalVisBackend also writes ``scalars.json``)."""
    (run,) = [d for d in glob.glob(osp.join(work_dir, '*')) if osp.isdir(osp.join(d, 'vis_data'))]
    return osp.join(run, 'vis_data', osp.basename(run) + '.json')


def last_json_record(work_dir, key):
    """The last record holding ``key`` in the json log of the run in ``work_dir``."""
    with open(json_log(work_dir)) as f:
        return [r for r in map(json.loads, f) if key in r][-1]


@pytest.mark.slow  # every demo row, two seeds, 1 epoch on subsets: about 3 minutes on 2 cores
def test_demo_smoke_runs_every_row_on_every_seed_end_to_end(cmd, tmp_path):
    """The whole demo, one epoch on subsets, two seeds, two worker processes."""
    demo = load_demo()
    out = cmd.python(
        ['tools/demo.py', '--smoke', '--seeds', '3', '4', '--jobs', '2', '--work-dir', tmp_path],
        timeout=900,
    )
    assert re.search(r'Total wall time: \d+ s', out)
    rows = table_rows(out, 'Smoke run')
    assert [(r[0], r[1]) for r in rows] == [(row.label, row.config) for row in demo.ROWS]
    for r, row in zip(rows, demo.ROWS):
        per_seed = []
        for seed, printed in zip((3, 4), r[3].split(' / ')):
            run_dir = tmp_path / f'seed{seed}' / demo.run_name(row.config)
            record = last_json_record(run_dir, demo.METRIC)
            assert printed == f'{record[demo.METRIC]:.2f}'  # the table reads each run's own log
            per_seed.append(record[demo.METRIC])
            if demo.is_distillation(row.config):
                # the run loaded the teacher of its own seed: it scores it as that teacher's run did
                teacher = last_json_record(tmp_path / f'seed{seed}' / 'teacher', demo.METRIC)
                assert record[f'teacher.{demo.METRIC}'] == teacher[demo.METRIC]
        assert r[2] == f'{np.mean(per_seed):.2f} +- {np.std(per_seed, ddof=1):.2f}'
    assert osp.isfile(tmp_path / 'seed3' / 'teacher' / 'epoch_1.pth')
    assert cv2.imread(str(tmp_path / 'results.png')) is not None


@pytest.mark.slow  # five segmentation rows, one seed, 4 iterations on 16 images: about 40 s
def test_demo_segmentation_smoke_loads_each_seeds_teacher_and_reads_each_runs_miou(cmd, tmp_path):
    demo = load_demo()
    out = cmd.python(
        ['tools/demo.py', '--segmentation', '--smoke', '--seeds', '0', '--work-dir', tmp_path],
        timeout=900,
    )
    rows = table_rows(out, 'mIoU on the synthetic shapes')
    assert [(r[0], r[1]) for r in rows] == [(row.label, row.config) for row in demo.SEG_ROWS]
    for r, row in zip(rows, demo.SEG_ROWS):
        record = last_json_record(tmp_path / 'seed0' / demo.run_name(row.config), 'mIoU')
        assert r[3] == f'{record["mIoU"]:.2f}'  # the table reads each run's own log
        if row.teachers:  # it loaded seed 0's teacher: it scores it as the teacher's run did
            teacher = last_json_record(tmp_path / 'seed0' / 'teacher', 'mIoU')
            assert record['teacher.mIoU'] == teacher['mIoU']
    assert cv2.imread(str(tmp_path / 'segmentation.png')) is not None


@pytest.mark.slow  # the ensemble and cross-modal rows with linear probes, 1 epoch on subsets
def test_demo_frontier_smoke_probes_every_row(cmd, tmp_path):
    demo = load_demo()
    out = cmd.python(
        ['tools/demo.py', '--frontier', '--smoke', '--work-dir', tmp_path], timeout=900
    )
    rows = table_rows(out, 'Smoke run')
    assert [(r[0], r[1]) for r in rows] == [(row.label, row.config) for row in demo.FRONTIER_ROWS]
    for r, row in zip(rows, demo.FRONTIER_ROWS):
        probe = (
            tmp_path / 'seed0' / 'linear_probe' / demo.run_name(row.config) / 'linear_probe.json'
        )
        with open(probe) as f:
            assert r[5] == f'{json.load(f)[demo.METRIC]:.2f}'
    assert cv2.imread(str(tmp_path / 'frontier.png')) is not None


def test_dist_train_trains_the_demo_crd_config_on_two_processes(cmd, tmp_path, free_port):
    """The main job's CRD+KD config, 2 gloo processes via tools/dist_train.sh, 2 iterations each."""
    out = cmd.run(
        [
            'bash',
            'tools/dist_train.sh',
            'configs/demo/crd_kd.py',
            '2',
            '--work-dir',
            tmp_path,
            '--cfg-options',
            'model.teacher_ckpt=None',
            'train_cfg.max_epochs=1',
            'train_dataloader.dataset.indices=8',
            'train_dataloader.batch_size=2',
            'val_dataloader.dataset.indices=8',
            'default_hooks.checkpoint.interval=1',
        ],
        env={'PORT': str(free_port)},
        timeout=240,
    )
    assert 'world_size: 2' in out or 'Distributed training: True' in out
    checkpoint = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu')
    assert checkpoint['meta']['iter'] == 2
    bank = checkpoint['crd_memory_banks']['distiller.distill_losses.loss_crd']
    assert bank['num_samples'] == 8 and bank['written'].all()
