"""Test (and evaluate) a checkpoint from an mmengine config.

Same flags and behaviour as mmpretrain 1.2.0's ``tools/test.py``; ``--show``
and ``--show-dir`` drive either mmpretrain's ``VisualizationHook`` or
mmdet's ``DetVisualizationHook``, whichever the config uses. Importing crd_mm
applies its compatibility patches and registers its modules; on machines
without CUDA a distributed launch runs on the gloo backend.
"""

import argparse
import os.path as osp
from copy import deepcopy

import mmengine
from mmengine.config import Config, ConfigDict
from mmengine.evaluator import DumpResults

from crd_mm.utils import launch
from crd_mm.utils.data_check import check_data
from crd_mm.utils.teacher_check import check_teachers

# the command suggested when a teacher checkpoint is missing, and how to do without it
TRAIN_TOOL = osp.join(osp.dirname(osp.abspath(__file__)), 'train.py')
TEST_TEACHER_HINT = (
    "A checkpoint written by a distillation run holds its teachers' weights: to test it "
    "without the teachers' own files, set the keys above to None (e.g. --cfg-options "
    'model.teacher_ckpt=None).'
)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save evaluation metrics in')
    parser.add_argument('--out', help='the file to write results to')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='whether --out gets the metrics or the predictions (default: predictions)',
    )
    launch.add_cfg_options_argument(parser, example='test_dataloader.batch_size=8')
    parser.add_argument('--amp', action='store_true', help='test with mixed precision')
    parser.add_argument('--show-dir', help='directory to save visualised predictions in')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--interval', type=int, default=1, help='visualise every N samples')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds each shown window stays open'
    )
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable the pin_memory option of the dataloader',
    )
    parser.add_argument(
        '--tta',
        action='store_true',
        help="test-time augmentation: the config's `tta_model` and "
        '`tta_pipeline`, or by default flip TTA averaging class scores',
    )
    return launch.parse_launcher_args(parser)


def enable_visualization(cfg, args):
    """Turn on the config's visualization hook for --show / --show-dir."""
    hook = cfg.default_hooks.get('visualization')
    assert hook is not None, (
        'No visualization hook in `default_hooks`; add e.g. '
        '`visualization=dict(type="VisualizationHook")`'
    )
    hook.show = args.show
    hook.wait_time = args.wait_time
    hook.interval = args.interval
    if 'Det' in str(hook.type):
        # mmdet.engine.hooks.DetVisualizationHook
        hook.draw = True
        hook.test_out_dir = args.show_dir
    else:
        # mmpretrain.engine.hooks.VisualizationHook
        hook.enable = True
        hook.out_dir = args.show_dir


def enable_tta(cfg):
    """Wrap the model for test-time augmentation.

    Configs may define ``tta_model`` and ``tta_pipeline`` (mmdet's do); a
    classification config without them gets flip TTA that averages scores.
    """
    if 'tta_model' not in cfg:
        cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
    if 'tta_pipeline' not in cfg:
        test_pipeline = cfg.test_dataloader.dataset.pipeline
        cfg.tta_pipeline = deepcopy(test_pipeline)
        cfg.tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[
                [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
                [test_pipeline[-1]],
            ],
        )
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def merge_args(cfg, args):
    """Merge command-line arguments into the config."""
    cfg.launcher = args.launcher
    launch.set_work_dir(cfg, args.work_dir, args.config)

    cfg.load_from = args.checkpoint

    if args.amp:
        cfg.test_cfg.fp16 = True
    if args.show or args.show_dir is not None:
        enable_visualization(cfg, args)
    if args.tta:
        enable_tta(cfg)

    launch.set_dataloader_defaults(
        cfg, ('test_dataloader',), pin_memory=not args.no_pin_memory, persistent_workers=None
    )

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main():
    args = parse_args()
    if args.out is None and args.out_item is not None:
        raise ValueError('--out-item needs --out to name the output file')

    cfg = merge_args(Config.fromfile(args.config), args)
    check_teachers(cfg, train_tool=TRAIN_TOOL, extra_hint=TEST_TEACHER_HINT)
    check_data(cfg, ('test_dataloader',))
    launch.setup_cpu_distributed(cfg, args.launcher)

    runner = launch.build_runner(cfg)
    if args.out and args.out_item in ('pred', None):
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)
    launch.teardown_distributed()


if __name__ == '__main__':
    main()
