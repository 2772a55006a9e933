"""Train a model (classifier, detector or distiller) from an mmengine config.

Same flags and behaviour as mmpretrain 1.2.0's ``tools/train.py``. Importing
crd_mm applies its compatibility patches and registers its modules; on
machines without CUDA a distributed launch runs on the gloo backend.
"""

import argparse
import os.path as osp

from mmengine.config import Config

from crd_mm.utils import launch
from crd_mm.utils.data_check import check_data
from crd_mm.utils.teacher_check import check_teachers

# the command suggested when a teacher checkpoint is missing
TRAIN_TOOL = osp.abspath(__file__)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, without a value, from '
        'the latest checkpoint in the work directory',
    )
    parser.add_argument(
        '--amp', action='store_true', help='enable automatic-mixed-precision training'
    )
    parser.add_argument(
        '--no-validate', action='store_true', help='do not evaluate checkpoints during training'
    )
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size '
        'relative to `auto_scale_lr.base_batch_size`',
    )
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable the pin_memory option of the dataloaders',
    )
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable the persistent_workers option of the dataloaders',
    )
    launch.add_cfg_options_argument(parser, example='train_cfg.max_epochs=10')
    return launch.parse_launcher_args(parser)


def merge_args(cfg, args):
    """Merge command-line arguments into the config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher
    launch.set_work_dir(cfg, args.work_dir, args.config)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    launch.set_dataloader_defaults(
        cfg,
        ('train_dataloader', 'val_dataloader', 'test_dataloader'),
        pin_memory=not args.no_pin_memory,
        persistent_workers=not args.no_persistent_workers,
    )

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    check_teachers(cfg, train_tool=TRAIN_TOOL)
    check_data(cfg, ('train_dataloader', 'val_dataloader'))
    launch.setup_cpu_distributed(cfg, args.launcher)

    launch.build_runner(cfg).train()
    launch.teardown_distributed()


if __name__ == '__main__':
    main()
