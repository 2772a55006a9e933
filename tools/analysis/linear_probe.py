"""Linear probe: how well a trained network's frozen representation transfers to another dataset.

The transfer measurement of the CRD paper (its table of linear probes on
STL-10 and TinyImageNet): the backbone and neck of a trained model (the
student, for a distillation checkpoint) are frozen, a new linear classifier
(``LinearClsHead``) is trained on another dataset's training split, and its
top-1 on that dataset's test split is reported. Training and testing run
through an mmengine Runner (``LinearProbeClassifier``, registered by crd_mm),
so any mmpretrain dataset, pipeline and evaluator works, on CPU or GPUs.

Usage::

    python tools/analysis/linear_probe.py CONFIG CHECKPOINT --dataset-config DATASET_CFG \
        [--work-dir DIR] [--epochs 30] [--lr 0.1] [--cfg-options KEY=VALUE ...] [--launcher pytorch]

CONFIG and CHECKPOINT are the trained model's: an mmpretrain classifier
config, or an mmrazor distiller config (``model.architecture`` is the student;
its weights are read under ``architecture.``). DATASET_CFG is an mmpretrain
dataset config: a file (or ``mmpretrain::_base_/datasets/...``) defining
``train_dataloader`` and ``test_dataloader`` (``val_dataloader`` if it has
no test loader) and optionally ``data_preprocessor`` (else CONFIG's is used)
and ``test_evaluator`` (else top-1 accuracy). The number of classes is the
data preprocessor's ``num_classes`` or, without it, the length of the training
set's ``classes``. The probe trains with SGD (momentum 0.9, no weight decay,
cosine decay to 0); ``--cfg-options`` overrides any key of the probe's config
(e.g. ``train_dataloader.batch_size=256``). The result is printed and written
to ``WORK_DIR/linear_probe.json``.
"""

import argparse
import json
import os.path as osp
import tempfile

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from crd_mm.utils import parse_launcher_args, setup_cpu_distributed, teardown_distributed
from crd_mm.utils.analysis import student_of
from crd_mm.utils.data_check import check_data

METRIC = 'accuracy/top1'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help="the trained model's config (classifier or distiller)")
    parser.add_argument('checkpoint', help="the trained model's checkpoint")
    parser.add_argument(
        '--dataset-config',
        required=True,
        help='mmpretrain dataset config with train_dataloader and test_dataloader',
    )
    parser.add_argument('--work-dir', help='where the probe logs and writes linear_probe.json')
    parser.add_argument('--epochs', type=int, default=30, help='training epochs of the linear head')
    parser.add_argument(
        '--lr', type=float, default=0.1, help='SGD learning rate of the linear head'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help="override keys of the probe's config, e.g. train_dataloader.batch_size=256",
    )
    return parse_launcher_args(parser)


def load_config(path: str) -> Config:
    """``Config.fromfile`` that also takes package-scoped paths (``mmpretrain::...``)."""
    if '::' not in path:
        return Config.fromfile(path)
    with tempfile.TemporaryDirectory() as tmp:
        child = osp.join(tmp, 'dataset.py')
        with open(child, 'w') as f:
            f.write(f'_base_ = [{path!r}]\n')
        return Config.fromfile(child)


def num_classes_of(data: Config) -> int:
    """The dataset config's ``data_preprocessor.num_classes``, else the training set's classes."""
    if (data.get('data_preprocessor') or {}).get('num_classes'):
        return data.data_preprocessor.num_classes
    from mmpretrain.registry import DATASETS

    init_default_scope('mmpretrain')
    dataset = DATASETS.build(data.train_dataloader.dataset)
    classes = dataset.metainfo.get('classes')
    if not classes:
        raise ValueError(
            'the dataset config gives no number of classes: set data_preprocessor.num_classes '
            'or use a dataset with metainfo classes'
        )
    return len(classes)


def probe_config(args) -> Config:
    """The Runner config of the probe: frozen backbone + neck, new linear head, the new dataset."""
    cfg = Config.fromfile(args.config)
    data = load_config(args.dataset_config)
    student, prefix = student_of(cfg.model)
    for key in ('backbone', 'head'):
        if key not in student:
            raise ValueError(
                f"{args.config}: the model to probe has no '{key}' (an mmpretrain "
                'ImageClassifier, or a distiller whose architecture is one)'
            )
    in_channels = student.head.get('in_channels')
    if in_channels is None:
        raise ValueError(
            f"{args.config}: the model's head gives no in_channels (the feature width "
            'the linear classifier reads)'
        )
    if 'train_dataloader' not in data or not (
        data.get('test_dataloader') or data.get('val_dataloader')
    ):
        raise ValueError(
            f'{args.dataset_config} must define train_dataloader and test_dataloader '
            "(or val_dataloader), as mmpretrain's _base_/datasets/*.py do"
        )
    test_dataloader = data.get('test_dataloader') or data.val_dataloader
    preprocessor = dict(
        data.get('data_preprocessor')
        or cfg.get('data_preprocessor')
        or cfg.model.get('data_preprocessor')
        or student.get('data_preprocessor')
        or {}
    )
    preprocessor.setdefault('type', 'ClsDataPreprocessor')
    preprocessor.pop('batch_augments', None)  # a linear probe trains on the plain images
    num_classes = num_classes_of(data)
    preprocessor['num_classes'] = num_classes
    name = (
        f'{osp.splitext(osp.basename(args.config))[0]}_on_'
        f'{osp.splitext(osp.basename(args.dataset_config))[0]}'
    )
    probe = Config(
        dict(
            default_scope='mmpretrain',
            work_dir=args.work_dir or osp.join('work_dirs', 'linear_probe', name),
            model=dict(
                type='LinearProbeClassifier',
                checkpoint=args.checkpoint,
                checkpoint_prefix=prefix,
                backbone=student.backbone,
                neck=student.get('neck'),
                head=dict(
                    type='LinearClsHead',
                    num_classes=num_classes,
                    in_channels=in_channels,
                    loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
                ),
                data_preprocessor=preprocessor,
            ),
            train_dataloader=data.train_dataloader,
            test_dataloader=test_dataloader,
            test_evaluator=data.get('test_evaluator') or dict(type='Accuracy', topk=(1,)),
            train_cfg=dict(by_epoch=True, max_epochs=args.epochs),
            test_cfg=dict(),
            optim_wrapper=dict(
                optimizer=dict(type='SGD', lr=args.lr, momentum=0.9, weight_decay=0.0)
            ),
            param_scheduler=dict(
                type='CosineAnnealingLR', by_epoch=True, T_max=args.epochs, eta_min=0.0
            ),
            default_hooks=dict(
                timer=dict(type='IterTimerHook'),
                logger=dict(type='LoggerHook', interval=50),
                param_scheduler=dict(type='ParamSchedulerHook'),
                checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),
                sampler_seed=dict(type='DistSamplerSeedHook'),
            ),
            env_cfg=cfg.get('env_cfg', dict(dist_cfg=dict(backend='nccl'))),
            randomness=dict(seed=0),
            log_level='INFO',
            launcher=args.launcher,
        )
    )
    if args.cfg_options:
        probe.merge_from_dict(args.cfg_options)
    return probe


def main():
    args = parse_args()
    probe = probe_config(args)
    check_data(probe, ('train_dataloader', 'test_dataloader'))
    setup_cpu_distributed(probe, args.launcher)
    runner = Runner.from_cfg(probe)
    runner.train()
    metrics = runner.test()
    if METRIC not in metrics:
        raise KeyError(f'the test evaluator reported no {METRIC!r} (got {sorted(metrics)})')
    result = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        dataset_config=args.dataset_config,
        epochs=probe.train_cfg.max_epochs,
        **{k: float(v) for k, v in metrics.items()},
    )
    if runner.rank == 0:
        with open(osp.join(probe.work_dir, 'linear_probe.json'), 'w') as f:
            json.dump(result, f, indent=2)
        print(f'linear probe top-1 on {args.dataset_config}: {metrics[METRIC]:.2f}', flush=True)
    teardown_distributed()


if __name__ == '__main__':
    main()
