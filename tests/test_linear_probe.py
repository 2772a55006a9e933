"""tools/analysis/linear_probe.py: a linear head on a trained network's frozen backbone."""

import importlib.util
import json
import os.path as osp

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope

import crd_mm  # noqa: F401  (registers LinearProbeClassifier)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PROBE = 'tools/analysis/linear_probe.py'
DIGITS = 'configs/demo/_base_digits.py'  # a dataset config: train/test loaders on the digits
SUBSET = ['train_dataloader.dataset.indices=400', 'test_dataloader.dataset.indices=200']


def state_dict(path):
    return torch.load(path, map_location='cpu')['state_dict']


def assert_frozen_copy(probe_ckpt, trained_ckpt, prefix):
    """The probe's backbone (weights and BN statistics) is exactly the trained network's."""
    probe, trained = state_dict(probe_ckpt), state_dict(trained_ckpt)
    backbone = {k: v for k, v in probe.items() if k.startswith('backbone.')}
    assert len(backbone) > 20
    for key, value in backbone.items():
        assert torch.equal(value, trained[prefix + key]), key
    assert probe['head.fc.weight'].shape == (10, 64)


def test_probe_of_a_briefly_trained_student_beats_chance_widely(cmd, tmp_path):
    # all 1,433 training digits (the demo's students see 10 per class), for the network and
    # the probe
    all_digits = 'train_dataloader.dataset.samples_per_class=None'
    cmd.python(
        [
            'tools/train.py',
            'configs/demo/student.py',
            '--work-dir',
            tmp_path / 'student',
            '--cfg-options',
            'train_cfg.max_epochs=2',
            'train_cfg.val_interval=2',
            all_digits,
        ],
        timeout=180,
    )
    checkpoint = tmp_path / 'student' / 'epoch_2.pth'
    out = cmd.python(
        [
            PROBE,
            'configs/demo/student.py',
            checkpoint,
            '--dataset-config',
            DIGITS,
            '--work-dir',
            tmp_path / 'probe',
            '--epochs',
            '3',
            '--cfg-options',
            all_digits,
        ],
        timeout=180,
    )
    result = json.loads((tmp_path / 'probe' / 'linear_probe.json').read_text())
    assert f'linear probe top-1 on {DIGITS}: {result["accuracy/top1"]:.2f}' in out
    assert result['epochs'] == 3
    assert result['accuracy/top1'] > 60.0  # chance: 10%
    assert_frozen_copy(tmp_path / 'probe' / 'epoch_3.pth', checkpoint, prefix='')


@pytest.mark.slow
def test_probe_reads_the_student_of_a_distillation_checkpoint(cmd, tmp_path):
    cmd.python(
        [
            'tools/train.py',
            'configs/demo/kd.py',
            '--work-dir',
            tmp_path / 'kd',
            '--cfg-options',
            'model.teacher_ckpt=None',
            'train_cfg.max_epochs=1',
            'train_cfg.val_interval=1',
            'train_dataloader.dataset.indices=128',
            'val_dataloader.dataset.indices=64',
        ],
        timeout=180,
    )
    out = cmd.python(
        [
            PROBE,
            'configs/demo/kd.py',
            tmp_path / 'kd' / 'epoch_1.pth',
            '--dataset-config',
            'configs/demo/_probe_rotated_digits.py',
            '--work-dir',
            tmp_path / 'probe',
            '--epochs',
            '1',
            '--cfg-options',
            *SUBSET,
        ],
        timeout=180,
    )
    assert 'linear probe top-1 on configs/demo/_probe_rotated_digits.py:' in out
    assert_frozen_copy(
        tmp_path / 'probe' / 'epoch_1.pth', tmp_path / 'kd' / 'epoch_1.pth', 'architecture.'
    )


def test_probe_refuses_a_checkpoint_of_another_model(tmp_path):
    init_default_scope('mmpretrain')
    student = MODELS.build(
        dict(
            type='mmpretrain.ImageClassifier',
            backbone=dict(type='CifarResNet', arch='resnet8'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=64),
        )
    )
    torch.save(dict(state_dict=student.state_dict()), tmp_path / 'student.pth')
    # a distiller's checkpoint keeps its student under 'architecture.'
    torch.save(
        dict(state_dict={f'architecture.{k}': v for k, v in student.state_dict().items()}),
        tmp_path / 'distiller.pth',
    )
    probe = dict(
        type='LinearProbeClassifier',
        checkpoint=str(tmp_path / 'student.pth'),
        backbone=dict(type='CifarResNet', arch='resnet8'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=64),
    )
    for frozen in (
        MODELS.build(probe),
        MODELS.build(
            dict(
                probe, checkpoint=str(tmp_path / 'distiller.pth'), checkpoint_prefix='architecture.'
            )
        ),
    ):
        frozen.init_weights()  # as the Runner does: the loaded backbone must survive it
        frozen.train()
        assert not frozen.backbone.training and frozen.head.training
        assert not any(p.requires_grad for p in frozen.backbone.parameters())
        for key, value in frozen.backbone.state_dict().items():
            assert torch.equal(value, student.backbone.state_dict()[key]), key
    with pytest.raises(
        KeyError, match=r"holds no 'architecture.backbone.\*' weights.*\['backbone', 'head'\]"
    ):
        MODELS.build(dict(probe, checkpoint_prefix='architecture.'))
    with pytest.raises(
        RuntimeError, match=r"the 'backbone.\*' weights do not fit the config's backbone"
    ):
        MODELS.build(dict(probe, backbone=dict(type='CifarResNet', arch='resnet20')))


def test_dataset_config_may_be_a_package_scoped_path():
    spec = importlib.util.spec_from_file_location('linear_probe', osp.join(REPO_ROOT, PROBE))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    data = tool.load_config('mmpretrain::_base_/datasets/cifar10_bs16.py')
    assert data.train_dataloader.dataset.type == data.test_dataloader.dataset.type == 'CIFAR10'
    assert data.data_preprocessor.num_classes == 10
