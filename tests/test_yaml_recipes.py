"""YAML recipes: every Python recipe prints as a resolved YAML recipe that loads back equal, and
the shipped YAML recipes resolve to the same config as their Python twins.

Recipes are globbed when the tests are collected, so recipes added later are
covered. A printed recipe must load back exactly (tuples included: the tool
writes them as ``!!python/tuple``); a hand-written YAML twin writes tuples as
plain lists, so twins are compared with tuples read as lists.
"""

import glob
import os
import os.path as osp
import runpy
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import crd_mm  # noqa: F401  (crd_mm:: scope, modules registered)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO_ROOT, 'configs')
TOOL = osp.join(REPO_ROOT, 'tools', 'misc', 'print_config.py')


def recipes(suffixes):
    """Recipe files under configs/: not in ``_base_`` folders, not ``_partial.py`` files.

    A folder's ``metafile.yml`` is the model index of its recipes (OpenMMLab's format), not one.
    """
    found = []
    for suffix in suffixes:
        found += glob.glob(osp.join(CONFIGS, '**', f'*{suffix}'), recursive=True)
    return sorted(
        osp.relpath(p, REPO_ROOT)
        for p in found
        if f'{os.sep}_base_{os.sep}' not in p
        and not osp.basename(p).startswith('_')
        and osp.basename(p) != 'metafile.yml'
    )


PYTHON_RECIPES = recipes(['.py'])
YAML_RECIPES = recipes(['.yaml', '.yml'])


def as_lists(value):
    """``value`` with every tuple read as a list (YAML twins write tuples as lists)."""
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    return value


def differences(a: dict, b: dict):
    return sorted(k for k in set(a) | set(b) if a.get(k, '<missing>') != b.get(k, '<missing>'))


@pytest.fixture(scope='module')
def yaml_text():
    """The tool's YAML writer, from the tool's own file."""
    return runpy.run_path(TOOL)['yaml_text']


def test_recipes_are_found():
    assert len(PYTHON_RECIPES) >= 50
    assert 'configs/crd/cifar100/crd_resnet110_resnet32_cifar100.yaml' in YAML_RECIPES


@pytest.mark.parametrize('recipe', PYTHON_RECIPES)
def test_python_recipe_prints_as_yaml_that_loads_back_equal(recipe, yaml_text, tmp_path):
    cfg = Config.fromfile(osp.join(REPO_ROOT, recipe))
    printed = tmp_path / (osp.splitext(osp.basename(recipe))[0] + '.yaml')
    printed.write_text(yaml_text(cfg, f'{recipe}, resolved'))
    loaded = Config.fromfile(str(printed))
    expected, got = cfg.to_dict(), loaded.to_dict()
    assert not differences(expected, got), differences(expected, got)
    assert expected == got  # the whole dict, tuples as tuples


@pytest.mark.parametrize('recipe', YAML_RECIPES)
def test_shipped_yaml_recipe_resolves_like_its_python_twin(recipe):
    twin = osp.join(REPO_ROOT, osp.splitext(recipe)[0] + '.py')
    assert osp.isfile(twin), f'{recipe} has no Python twin {osp.relpath(twin, REPO_ROOT)}'
    from_yaml = Config.fromfile(osp.join(REPO_ROOT, recipe))
    from_python = Config.fromfile(twin)
    a, b = as_lists(from_yaml.to_dict()), as_lists(from_python.to_dict())
    assert not differences(a, b), differences(a, b)
    for key in (
        'model',
        'train_dataloader',
        'val_dataloader',
        'optim_wrapper',
        'param_scheduler',
        'train_cfg',
        'custom_hooks',
    ):
        assert a[key] == b[key], key

    # and the two build the same networks (no teacher checkpoint is fetched)
    shapes = []
    for cfg in (from_yaml, from_python):
        cfg.merge_from_dict({'model.teacher_ckpt': None})
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model)
        shapes.append({k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert shapes[0] == shapes[1] and any(k.startswith('teacher.') for k in shapes[0])


def test_twin_comparison_catches_a_different_recipe(tmp_path):
    """The twin check fails when the YAML differs from its Python twin in one value."""
    recipe = osp.join(CONFIGS, 'crd', 'cifar100', 'crd_resnet110_resnet32_cifar100.yaml')
    text = open(recipe).read()
    assert 'arch: resnet32}' in text
    changed = tmp_path / 'crd_changed.yaml'
    changed.write_text(
        text.replace('arch: resnet32}', 'arch: resnet20}').replace(
            '../../_base_/', osp.join(CONFIGS, '_base_') + '/'
        )
    )
    a = as_lists(Config.fromfile(str(changed)).to_dict())
    b = as_lists(Config.fromfile(recipe[: -len('.yaml')] + '.py').to_dict())
    assert differences(a, b) == ['model']


def run_tool(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', [TOOL, *argv])
    runpy.run_path(TOOL, run_name='__main__')
    return capsys.readouterr().out


def test_print_config_tool_yaml_and_py_with_cfg_options(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(REPO_ROOT)
    recipe = 'configs/crd/cifar100/crd_resnet56_resnet20_cifar100.py'
    expected = Config.fromfile(recipe)
    expected.merge_from_dict({'train_cfg.max_epochs': 7})

    out = run_tool(
        [recipe, '--format', 'yaml', '--cfg-options', 'train_cfg.max_epochs=7'], monkeypatch, capsys
    )
    assert out.startswith(f'# {recipe} with train_cfg.max_epochs=7, resolved by')
    (tmp_path / 'printed.yaml').write_text(out)
    assert Config.fromfile(str(tmp_path / 'printed.yaml')).to_dict() == expected.to_dict()

    out = run_tool([recipe, '--cfg-options', 'train_cfg.max_epochs=7'], monkeypatch, capsys)
    (tmp_path / 'printed.py').write_text(out)
    assert Config.fromfile(str(tmp_path / 'printed.py')).to_dict() == expected.to_dict()


def test_print_config_tool_resolves_crd_mm_scope(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'mine.py').write_text(
        "_base_ = ['crd_mm::crd/cifar100/crd_resnet56_resnet20_cifar100.py']\n"
        'optim_wrapper = dict(optimizer=dict(lr=0.01))\n'
    )
    out = run_tool(['mine.py', '--format', 'yaml'], monkeypatch, capsys)
    (tmp_path / 'mine.yaml').write_text(out)
    printed = Config.fromfile(str(tmp_path / 'mine.yaml'))
    recipe = Config.fromfile(
        osp.join(CONFIGS, 'crd', 'cifar100', 'crd_resnet56_resnet20_cifar100.py')
    )
    assert printed.optim_wrapper.optimizer.lr == 0.01
    assert printed.model.to_dict() == recipe.model.to_dict()
    assert printed.train_dataloader.to_dict() == recipe.train_dataloader.to_dict()


@pytest.mark.slow
def test_print_config_command_line(cmd, tmp_path):
    recipe = 'configs/crd/resnet34_resnet18_in1k.py'
    out = cmd.python([TOOL, recipe, '--format', 'yaml'])
    printed = tmp_path / 'in1k.yaml'
    printed.write_text(out[out.index(f'# {recipe}') :])
    got = Config.fromfile(str(printed)).to_dict()
    assert got == Config.fromfile(osp.join(REPO_ROOT, recipe)).to_dict()
