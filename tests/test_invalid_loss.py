"""A diverging run stops: StopOnNonFiniteLossHook is in every recipe and stops a real Runner.

* Every recipe under configs/ (demo and detection included; ``_base_`` files
  and ``_``-prefixed fragments are not recipes) carries the hook in its
  ``default_hooks`` after ``Config.fromfile``, and it builds in the recipe's
  scope.
* The demo's student recipe with lr 1e30 stops at the first iteration whose
  loss is not finite: the same run with ``warn_only=True`` and every iteration
  logged says which one that is (and reports it once).
* The demo's CRD recipe with a CRD ``loss_weight`` beyond float32 stops at
  iteration 1 and names the CRD term and the total, not the student's
  cross-entropy.
* The error crosses a process boundary (ForkingPickler), and tools/demo.py
  ends the demo on a stopped run, naming its row, seed and log directory.
* In a 2-process gloo run where only rank 1's loss turns NaN, both ranks stop
  at that iteration (rank 0 is not left waiting in a collective).
"""

import glob
import importlib
import json
import math
import os.path as osp
import pickle
import sys
from multiprocessing.reduction import ForkingPickler

import pytest
import torch.multiprocessing  # noqa: F401  (registers torch's reductions with ForkingPickler)
from mmengine.config import Config
from mmengine.registry import HOOKS, init_default_scope
from mmengine.runner import Runner
from tiny_configs import crd_config

import crd_mm  # noqa: F401  (registers the hook, as the recipes' custom_imports do)
from crd_mm.engine import NonFiniteLossError, StopOnNonFiniteLossHook

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_ROOT = osp.join(REPO_ROOT, 'configs')


def discover_recipes():
    paths = []
    for ext in ('py', 'yaml', 'yml'):
        paths += glob.glob(osp.join(CONFIG_ROOT, '**', f'*.{ext}'), recursive=True)
    recipes = []
    for path in sorted(paths):
        rel = osp.relpath(path, REPO_ROOT)
        if '_base_' in rel.split(osp.sep) or osp.basename(rel).startswith('_'):
            continue  # bases and fragments that recipes inherit
        if osp.basename(rel) in ('metafile.yml', 'model-index.yml'):
            continue  # model-index metadata, not configs
        recipes.append(rel)
    return recipes


RECIPES = discover_recipes()


def test_discovery_finds_demo_and_detection_recipes():
    for family in ('demo', 'detection', 'crd', 'cifar100_teachers', 'crossmodal', 'ensemble'):
        assert any(p.split(osp.sep)[1] == family for p in RECIPES), family


@pytest.mark.parametrize('path', RECIPES)
def test_every_recipe_stops_on_a_non_finite_loss(path):
    cfg = Config.fromfile(osp.join(REPO_ROOT, path))
    hook_cfg = cfg.get('default_hooks', {}).get('stop_on_non_finite_loss')
    assert hook_cfg is not None and hook_cfg['type'] == 'StopOnNonFiniteLossHook', (
        f'{path}: default_hooks.stop_on_non_finite_loss is {hook_cfg!r}'
    )
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    assert isinstance(HOOKS.build(hook_cfg), StopOnNonFiniteLossHook)


def demo_runner(config, work_dir, name, options):
    """A Runner of a demo recipe as tools/train.py builds it, with ``options`` merged in."""
    cfg = Config.fromfile(osp.join(CONFIG_ROOT, 'demo', config))
    cfg.merge_from_dict(options)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = name  # several runners in one process need their own logger
    cfg.log_level = 'WARNING'
    return Runner.from_cfg(cfg)


def logged_losses(runner):
    """(iteration, loss) of every training record in the run's json log."""
    log = osp.join(runner.log_dir, 'vis_data', f'{runner.timestamp}.json')
    with open(log) as f:
        return [(r['iter'], r['loss']) for r in map(json.loads, f) if 'loss' in r]


DIVERGING = {
    'optim_wrapper.optimizer.lr': 1e30,
    'train_cfg.max_epochs': 3,
    'train_cfg.val_interval': 100,  # no validation: only training matters here
}


def test_a_diverging_run_stops_at_its_first_non_finite_loss(tmp_path):
    unchecked = demo_runner(
        'student.py',
        tmp_path / 'unchecked',
        'unchecked',
        {
            **DIVERGING,
            'default_hooks.stop_on_non_finite_loss.warn_only': True,
            'default_hooks.logger.interval': 1,
        },
    )
    unchecked.train()  # trains on through the NaNs
    losses = logged_losses(unchecked)
    assert len(losses) == unchecked.max_iters  # every iteration logged
    first_bad = next(i for i, loss in losses if not math.isfinite(loss))
    assert first_bad < unchecked.max_iters  # it diverges before the end
    with open(osp.join(unchecked.log_dir, f'{unchecked.timestamp}.log')) as f:
        reported = [line for line in f if 'The loss is not finite at iteration' in line]
    assert len(reported) == 1 and f'iteration {first_bad} of' in reported[0]  # warn_only: once

    runner = demo_runner('student.py', tmp_path / 'checked', 'checked', DIVERGING)
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    error = info.value
    assert error.iteration == first_bad
    assert runner.iter == first_bad - 1  # stopped there: the loop never counted that iteration
    message = str(error)
    assert message.startswith(f'Training stopped at iteration {first_bad} of {runner.max_iters}')
    assert 'loss=' in message and 'loss' in error.terms
    assert all(not math.isfinite(value) for value in error.terms.values())
    # it crosses a process boundary intact (what a ProcessPoolExecutor worker sends back)
    assert str(pickle.loads(ForkingPickler.dumps(error))) == message
    assert 'lower the learning rate' in message and 'clip' in message
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        assert message in f.read()  # also in the run's log
    assert not glob.glob(str(tmp_path / 'checked' / '*.pth'))


def test_the_error_names_the_terms_that_went_non_finite(tmp_path):
    runner = demo_runner(
        'crd.py',
        tmp_path / 'crd',
        'crd_inf_weight',
        {
            'model.teacher_ckpt': None,
            'model.distiller.distill_losses.loss_crd.loss_weight': 1e39,  # inf in float32
            'train_cfg.max_epochs': 1,
        },
    )
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    error = info.value
    assert error.iteration == 1 and error.epoch == 1
    assert set(error.terms) == {'loss', 'distill.loss_crd'}
    assert 'distill.loss_crd=inf' in str(error) and 'student.loss' not in str(error)


@pytest.mark.slow
def test_all_ranks_stop_together_when_one_ranks_loss_is_not_finite(
    make_imagefolder, tmp_path, cmd, free_port
):
    """Two gloo processes: rank 1's loss turns NaN at iteration 2; both ranks stop there."""
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    cfg = crd_config(
        data,
        tmp_path / 'work',
        max_epochs=2,
        batch_size=2,
        hooks=[dict(type='CRDMemoryBankHook'), dict(type='PoisonRankHook', rank=1, iteration=2)],
        extra_imports=('loss_probe',),
    )
    cfg.default_hooks.stop_on_non_finite_loss = dict(type='StopOnNonFiniteLossHook')
    cfg.dump(tmp_path / 'poisoned.py')
    out = cmd.python(
        [
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={free_port}',
            'tools/train.py',
            str(tmp_path / 'poisoned.py'),
            '--launcher',
            'pytorch',
        ],
        env={'PYTHONPATH': osp.pathsep.join([REPO_ROOT, osp.join(REPO_ROOT, 'tests')])},
        timeout=240,
        check=False,
    )
    stopped = 'Training stopped at iteration 2 of 4 (epoch 1, batch 2): the loss is not finite'
    assert f'{stopped} (rank 1 of 2: non-finite: loss=nan' in out, out[-6000:]
    assert (
        f'{stopped} (rank 0 of 2: its losses are finite; ranks with a non-finite loss: [1])' in out
    ), out[-6000:]
    assert 'NonFiniteLossError' in out


def test_the_demo_stops_and_names_a_run_that_diverged(tmp_path, monkeypatch):
    """tools/demo.py: a run stopped by the hook ends the demo with its row, seed and log."""
    monkeypatch.syspath_prepend(osp.join(REPO_ROOT, 'tools'))  # its spawned workers import it
    demo = importlib.import_module('demo')
    row = demo.ROWS[0]  # the teacher
    try:
        with pytest.raises(SystemExit) as info:
            demo.train_rows(
                [row],
                [0],
                str(tmp_path),
                {'optim_wrapper.optimizer.lr': 1e30, 'train_cfg.max_epochs': 1},
                jobs=1,
            )
    finally:
        sys.modules.pop('demo', None)
    message = str(info.value.code)
    assert message.startswith(f'[demo] seed 0, {row.label}: training diverged')
    assert 'loss in epoch 1) and was stopped' in message
    assert str(tmp_path / 'seed0' / demo.run_name(row.config)) in message
