"""Export the student of a distillation run: one standalone config and one checkpoint.

Usage::

    python tools/model_converters/convert_to_student.py CONFIG CHECKPOINT OUT_DIR [--name NAME]

CONFIG is the distiller's config (best the copy the run dumped into its work
directory), CHECKPOINT a checkpoint of that run. OUT_DIR receives ``NAME.py``,
a config that builds the student alone (its network, data preprocessor, test
pipeline, dataloaders and evaluator; no teacher, no distiller) and
``NAME.pth``, the student's weights under its own keys with the run's
``meta``. mmpretrain's ``init_model`` / ``ImageClassificationInferencer``,
mmdet's ``init_detector`` and ``tools/test.py`` load the pair as they load any
model of theirs. See docs/export.md; the logic is ``crd_mm.utils.export``.
"""

import argparse
import shlex

from mmengine.config import Config, DictAction

from crd_mm.utils.export import export_student


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help="the distiller's config file")
    parser.add_argument('checkpoint', help='a checkpoint of a run of that config')
    parser.add_argument('out_dir', help='where NAME.py and NAME.pth are written')
    parser.add_argument(
        '--name', help="the files' name (default: the config's file name + '_student')"
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help="override keys of the distiller's config first, e.g. "
        'test_dataloader.dataset.data_root=data/cifar',
    )
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    config_file, checkpoint_file = export_student(
        cfg, args.checkpoint, args.out_dir, name=args.name, config_path=args.config
    )
    print(f'student config: {config_file}')
    print(f'student checkpoint: {checkpoint_file}')
    print(f'test it: {shlex.join(["python", "tools/test.py", config_file, checkpoint_file])}')


if __name__ == '__main__':
    main()
