"""crd_mm's CRDLoss and CRDConnector replace mmrazor's under the same registry names.

mmrazor's argument names get errors that name crd_mm's, and mmrazor's own
CRD config, read with crd_mm imported, either builds crd_mm's classes or
fails saying what to change. mmrazor's argument lists are read from
mmrazor's own classes (still importable from their modules), so a name that
this test does not know fails it.
"""

import importlib.util
import inspect
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.structures import DataSample

import crd_mm  # noqa: F401  (applies compat patches, registers modules)
from crd_mm.models.connectors import CRDConnector
from crd_mm.models.losses import CRDLoss

# mmrazor's own classes, replaced in its registry by crd_mm's (mmrazor imports after crd_mm)
import mmrazor.models.architectures.connectors.crd_connector as razor_connector  # isort: skip
import mmrazor.models.losses.crd_loss as razor_loss  # isort: skip

CRD_CONFIG = 'distill/mmcls/crd/crd_neck_r50_r18_8xb16_cifar10.py'
# mmrazor's CRDLoss argument -> what the error must tell to write instead
MMRAZOR_CRD_LOSS_NAMES = {
    'neg_num': 'num_negatives=',
    'dim_out': 'feat_dim=',
    'sample_n': 'CRDMemoryBankHook',  # crd_mm sizes the bank from the training set
}


def arguments(cls):
    params = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name
        for p in params
        if p.name != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def build(cfg):
    init_default_scope('mmrazor')
    return MODELS.build(cfg)


def test_the_registry_names_build_crd_mm_classes_and_their_docstrings_say_so():
    assert type(build(dict(type='CRDLoss'))) is CRDLoss
    assert type(build(dict(type='CRDConnector', dim_in=4))) is CRDConnector
    for cls in (CRDLoss, CRDConnector):
        doc = ' '.join(cls.__doc__.split())
        assert "under mmrazor's own name with ``force=True``" in doc, cls


def test_mmrazor_crd_loss_names_are_refused_naming_crd_mm_parameters():
    renamed = arguments(razor_loss.CRDLoss) - arguments(CRDLoss)
    assert renamed == set(MMRAZOR_CRD_LOSS_NAMES), 'a new mmrazor name: add it to the test'
    for name, advice in MMRAZOR_CRD_LOSS_NAMES.items():
        with pytest.raises(TypeError) as info:
            build(dict(type='CRDLoss', **{name: 7}))
        message = str(info.value)
        assert f'{name}=7' in message and advice in message, message

    # every argument of mmrazor's CRDLoss, with mmrazor's defaults: each renamed one is named
    defaults = {
        p.name: p.default
        for p in inspect.signature(razor_loss.CRDLoss.__init__).parameters.values()
        if p.name != 'self'
    }
    with pytest.raises(TypeError) as info:
        build(dict(type='CRDLoss', **defaults))
    message = str(info.value)
    for name, advice in MMRAZOR_CRD_LOSS_NAMES.items():
        assert f'{name}={defaults[name]!r}' in message and advice in message


def test_mmrazor_crd_connector_arguments_are_accepted_and_dim_in_is_required():
    assert arguments(razor_connector.CRDConnector) <= arguments(CRDConnector)
    connector = build(dict(type='CRDConnector', dim_in=6, dim_out=3, init_cfg=None))
    assert connector(torch.randn(2, 6)).shape == (2, 3)
    with pytest.raises(ValueError, match='CRDConnector needs dim_in='):
        build(dict(type='CRDConnector', dim_out=3))  # mmrazor's default was 1024
    with pytest.raises(TypeError, match=r'(?s)power=2 is not an argument.*dim_in, dim_out'):
        build(dict(type='CRDConnector', dim_in=6, power=2))


def mmrazor_crd_config_text():
    package = osp.dirname(importlib.util.find_spec('mmrazor').origin)
    with open(osp.join(package, '.mim', 'configs', CRD_CONFIG)) as f:
        return f.read()


def test_mmrazors_own_crd_config_fails_saying_what_to_change(tmp_path):
    assert importlib.util.find_spec('mmcls') is None  # mmcls 1.x is not installable
    child = tmp_path / 'crd.py'
    child.write_text(f"_base_ = ['mmrazor::{CRD_CONFIG}']\n")
    with pytest.raises(ModuleNotFoundError) as info:
        Config.fromfile(str(child))
    message = str(info.value)
    # its first mmcls:: base, and its mmpretrain:: twin
    assert "'mmcls::_base_/datasets/cifar10_bs16.py': mmcls is not installed" in message
    assert "write 'mmpretrain::_base_/datasets/cifar10_bs16.py'" in message
    assert "_scope_='mmpretrain' for _scope_='mmcls'" in message
    # and what crd_mm's CRD needs instead of mmrazor's
    assert "custom_hooks = [dict(type='CRDMemoryBankHook')]" in message
    assert 'neg_num -> num_negatives' in message
    assert 'crd_mm::crd/cifar100/' in message


def test_mmrazors_crd_config_changed_as_told_builds_crd_mm_classes(tmp_path):
    """Do what the error says; the model builds with crd_mm's classes; the hook is the last step."""
    text = mmrazor_crd_config_text()
    text = text.replace('mmcls::', 'mmpretrain::').replace("'mmcls'", "'mmpretrain'")
    path = tmp_path / 'crd_mmpretrain.py'
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    # the released teacher weights are not downloaded here: a random teacher
    cfg.model.teacher.pretrained = False
    cfg.model.teacher_ckpt = None
    model = build(cfg.model)
    loss = model.distiller.distill_losses['loss_crd']
    assert type(loss) is CRDLoss and loss.loss_weight == 0.8
    assert all(type(c) is CRDConnector for c in model.distiller.connectors.values())

    samples = [DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i) for i in range(2)]
    data = model.data_preprocessor(
        dict(
            inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)] * 2, data_samples=samples
        ),
        training=True,
    )
    with pytest.raises(RuntimeError, match=r"custom_hooks = \[dict\(type='CRDMemoryBankHook'\)\]"):
        model(**data, mode='loss')
