"""`make demo` (tools/demo.py) and its configs in configs/demo/."""
import glob
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

import crd_mm  # noqa: F401  (registers crd_mm's modules and mmrazor's)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = sorted(
    osp.relpath(p, REPO_ROOT)
    for p in glob.glob(osp.join(REPO_ROOT, 'configs', 'demo', '*.py'))
    if not osp.basename(p).startswith('_'))


def load_demo():
    spec = importlib.util.spec_from_file_location(
        'demo', osp.join(REPO_ROOT, 'tools', 'demo.py'))
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
        assert cfg.val_cfg.type.endswith(('SingleTeacherDistillValLoop', 'CrossModalDistillValLoop'))
        assert len(model.distiller.distill_losses) >= 1


def test_rows_cover_every_demo_config_and_the_teacher_comes_first():
    demo = load_demo()
    assert sorted(row.config for row in demo.ROWS) == DEMO_CONFIGS
    assert len({row.label for row in demo.ROWS}) == len(demo.ROWS)
    assert not demo.is_distillation(demo.ROWS[0].config)
    # a user training the teacher by hand (tools/train.py configs/demo/teacher.py
    # --work-dir work_dirs/demo/teacher) gets the checkpoint the distillers name
    teacher = Config.fromfile(osp.join(REPO_ROOT, demo.ROWS[0].config))
    expected = f'work_dirs/demo/teacher/epoch_{teacher.train_cfg.max_epochs}.pth'
    for row in demo.ROWS[1:]:
        cfg = Config.fromfile(osp.join(REPO_ROOT, row.config))
        if 'teacher_ckpt' in cfg.model:
            assert cfg.model.teacher_ckpt == expected
            assert cfg.model.teacher.backbone == teacher.model.backbone


@pytest.mark.slow  # every demo row through tools/train.py: about 5 minutes on 2 cores
def test_demo_smoke_runs_every_row_end_to_end(cmd, tmp_path):
    """The whole demo, one epoch on subsets, through tools/train.py subprocesses."""
    demo = load_demo()
    out = cmd.python(['tools/demo.py', '--smoke', '--work-dir', tmp_path], timeout=600)
    assert 'Epoch(train)' in out and 'Epoch(val)' in out  # mmengine's progress logging
    assert re.search(r'Total wall time: \d+ s', out)

    table = out[out.index('Smoke run'):].splitlines()
    assert table[1].split('|')[1].strip() == 'method'
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in table[3:]
            if line.startswith('| ')]
    assert [(r[0], r[1]) for r in rows] == [(row.label, row.config) for row in demo.ROWS]
    for r in rows:
        assert 0.0 <= float(r[2]) <= 100.0
    # every distillation run evaluated the teacher it loaded: the teacher run's
    # final checkpoint, so its accuracy on the same test images is the same
    teacher_acc = rows[0][2]
    distill_rows = [r for r, row in zip(rows, demo.ROWS) if demo.is_distillation(row.config)]
    assert len(distill_rows) >= 4
    assert all(r[3] == teacher_acc for r in distill_rows)
    assert osp.isfile(tmp_path / 'teacher' / 'epoch_1.pth')
    # the linear probe ran, on the last row of each probe task only
    last_of_task = {row.probe: row.config for row in demo.ROWS}
    for r, row in zip(rows, demo.ROWS):
        if row.config in last_of_task.values():
            assert 0.0 <= float(r[4]) <= 100.0
            assert osp.isfile(tmp_path / 'linear_probe' / osp.splitext(osp.basename(row.config))[0] /
                              'linear_probe.json')
        else:
            assert r[4] == ''


def test_dist_train_trains_the_demo_crd_config_on_two_processes(cmd, tmp_path, free_port):
    """The main job's CRD+KD config, 2 gloo processes through tools/dist_train.sh, 2 iterations each."""
    out = cmd.run(['bash', 'tools/dist_train.sh', 'configs/demo/crd_kd.py', '2', '--work-dir', tmp_path,
                   '--cfg-options', 'model.teacher_ckpt=None', 'train_cfg.max_epochs=1',
                   'train_dataloader.dataset.indices=8', 'train_dataloader.batch_size=2',
                   'val_dataloader.dataset.indices=8', 'default_hooks.checkpoint.interval=1'],
                  env={'PORT': str(free_port)}, timeout=240)
    assert 'world_size: 2' in out or 'Distributed training: True' in out
    checkpoint = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu')
    assert checkpoint['meta']['iter'] == 2
    bank = checkpoint['crd_memory_banks']['distiller.distill_losses.loss_crd']
    assert bank['num_samples'] == 8 and bank['written'].all()
