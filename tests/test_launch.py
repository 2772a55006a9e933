"""The steps tools/train.py and tools/test.py share, done once in crd_mm/utils/launch.py.

Each helper is run on a real mmengine Config; the two tools are run on a real
recipe with ``--help`` parsing and through their ``merge_args`` (the full runs
are in tests/test_tools.py).
"""

import argparse
import os.path as osp
import runpy

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from crd_mm.utils import (
    add_cfg_options_argument,
    build_runner,
    set_dataloader_defaults,
    set_work_dir,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RECIPE = osp.join(REPO_ROOT, 'configs', 'crd', 'cifar100', 'crd_resnet56_resnet20_cifar100.py')


def loaders(num_workers=2, **extra):
    return Config(
        dict(
            train_dataloader=dict(batch_size=4, num_workers=num_workers, **extra),
            val_dataloader=None,
            test_dataloader=dict(batch_size=4, num_workers=0),
        )
    )


def test_work_dir_command_line_then_config_then_file_name():
    cfg = Config(dict(work_dir='from_config'))
    set_work_dir(cfg, 'from_cli', 'configs/x/my_recipe.py')
    assert cfg.work_dir == 'from_cli'
    set_work_dir(cfg, None, 'configs/x/my_recipe.py')
    assert cfg.work_dir == 'from_cli'  # the config's own value is kept
    cfg = Config(dict())
    set_work_dir(cfg, None, 'configs/x/my_recipe.py')
    assert cfg.work_dir == osp.join('./work_dirs', 'my_recipe')


def test_dataloader_defaults_under_the_configs_values():
    cfg = loaders(pin_memory=False)
    set_dataloader_defaults(cfg, ('train_dataloader', 'val_dataloader', 'test_dataloader'))
    train, test = cfg.train_dataloader, cfg.test_dataloader
    assert train.pin_memory is False  # the config's own value wins over the default
    assert train.persistent_workers is True and train.collate_fn == dict(type='default_collate')
    # no workers: torch rejects persistent workers, so none are asked for
    assert 'persistent_workers' not in test and test.pin_memory is True
    assert cfg.val_dataloader is None


def test_dataloader_flags_turn_options_off_and_none_leaves_workers_alone():
    cfg = loaders(persistent_workers=True)
    set_dataloader_defaults(cfg, ('train_dataloader',), pin_memory=False, persistent_workers=False)
    assert cfg.train_dataloader.pin_memory is False
    assert cfg.train_dataloader.persistent_workers is False

    cfg = loaders()
    set_dataloader_defaults(cfg, ('train_dataloader',), persistent_workers=None)
    assert 'persistent_workers' not in cfg.train_dataloader


def test_cfg_options_argument_parses_key_value_pairs():
    parser = argparse.ArgumentParser()
    add_cfg_options_argument(parser, example='train_cfg.max_epochs=10')
    args = parser.parse_args(['--cfg-options', 'train_cfg.max_epochs=3', 'a.b=[1,2]'])
    assert args.cfg_options == {'train_cfg.max_epochs': 3, 'a.b': [1, 2]}
    assert 'train_cfg.max_epochs=10' in parser.format_help()


def test_build_runner_uses_mmengines_runner_without_runner_type(tmp_path):
    cfg = Config(
        dict(
            default_scope='mmpretrain',
            model=dict(type='ImageClassifier', backbone=dict(type='CifarResNet')),
            work_dir=str(tmp_path),
        )
    )
    assert type(build_runner(cfg)) is Runner


def test_build_runner_rejects_an_unknown_runner_type(tmp_path):
    cfg = Config(dict(runner_type='NoSuchRunner', model=dict(), work_dir=str(tmp_path)))
    with pytest.raises(KeyError, match='NoSuchRunner'):
        build_runner(cfg)


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_tools_merge_work_dir_and_loaders_through_the_helpers(tool):
    merge_args = runpy.run_path(osp.join(REPO_ROOT, 'tools', f'{tool}.py'))['merge_args']
    args = argparse.Namespace(
        config=RECIPE,
        checkpoint='ckpt.pth',
        launcher='none',
        work_dir=None,
        cfg_options={'test_dataloader.batch_size': 8},
        no_validate=False,
        amp=False,
        resume=None,
        auto_scale_lr=False,
        no_pin_memory=True,
        no_persistent_workers=False,
        show=False,
        show_dir=None,
        tta=False,
    )
    cfg = merge_args(Config.fromfile(RECIPE), args)
    assert cfg.work_dir == osp.join('./work_dirs', 'crd_resnet56_resnet20_cifar100')
    assert cfg.test_dataloader.pin_memory is False and cfg.test_dataloader.batch_size == 8
    assert cfg.test_dataloader.collate_fn == dict(type='default_collate')
