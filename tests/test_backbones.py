"""The CRD paper's CIFAR networks as mmpretrain backbones: size and shapes."""

import pytest
import torch
from mmpretrain.registry import MODELS

import crd_mm  # noqa: F401  (registers the backbones)

# Published reference facts: parameter counts of the CRD authors' CIFAR-100
# models (backbone + 100-way linear classifier), counted from their code,
# HobbitLong/RepDistiller models/ at commit b84f547, as
# sum(p.numel() for p in model_dict[name](num_classes=100).parameters()).
# name: (our backbone config, feature width C, authors' count, final H = W
# for a 32x32 input)
ARCHS = {
    'resnet8': (dict(type='CifarResNet', arch='resnet8'), 64, 83892, 8),
    'resnet14': (dict(type='CifarResNet', arch='resnet14'), 64, 181108, 8),
    'resnet20': (dict(type='CifarResNet', arch='resnet20'), 64, 278324, 8),
    'resnet32': (dict(type='CifarResNet', arch='resnet32'), 64, 472756, 8),
    'resnet44': (dict(type='CifarResNet', arch='resnet44'), 64, 667188, 8),
    'resnet56': (dict(type='CifarResNet', arch='resnet56'), 64, 861620, 8),
    'resnet110': (dict(type='CifarResNet', arch='resnet110'), 64, 1736564, 8),
    'resnet8x4': (dict(type='CifarResNet', arch='resnet8x4'), 256, 1233540, 8),
    'resnet32x4': (dict(type='CifarResNet', arch='resnet32x4'), 256, 7433860, 8),
    'wrn_16_1': (dict(type='CifarWideResNet', arch='wrn_16_1'), 64, 180916, 8),
    'wrn_16_2': (dict(type='CifarWideResNet', arch='wrn_16_2'), 128, 703284, 8),
    'wrn_40_1': (dict(type='CifarWideResNet', arch='wrn_40_1'), 64, 569780, 8),
    'wrn_40_2': (dict(type='CifarWideResNet', arch='wrn_40_2'), 128, 2255156, 8),
    'vgg8': (dict(type='CifarVGG', arch='vgg8'), 512, 3965028, 4),
    'vgg11': (dict(type='CifarVGG', arch='vgg11'), 512, 9277284, 4),
    'vgg13': (dict(type='CifarVGG', arch='vgg13'), 512, 9462180, 4),
    'MobileNetV2': (dict(type='CifarMobileNetV2'), 1280, 812836, 2),
    'ShuffleV1': (dict(type='CifarShuffleNetV1'), 960, 949258, 4),
    'ShuffleV2': (dict(type='CifarShuffleNetV2'), 1024, 1355528, 4),
    'ResNet50': (dict(type='CifarResNet50'), 2048, 23705252, 4),
}


def build_classifier(backbone: dict, width: int):
    return MODELS.build(
        dict(
            _scope_='mmpretrain',  # whatever default scope an earlier test in this process left
            type='ImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=100, in_channels=width),
        )
    )


@pytest.mark.parametrize('name', list(ARCHS))
def test_classifier_matches_authors_model(name):
    backbone, width, num_params, size = ARCHS[name]
    model = build_classifier(backbone, width)
    assert sum(p.numel() for p in model.parameters()) == num_params

    model.init_weights()
    model.eval()
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.backbone(inputs)
        logits = model(inputs, mode='tensor')
    assert isinstance(feats, tuple) and len(feats) == 1
    assert feats[0].shape == (2, width, size, size)
    # every network ends in a ReLU before pooling, as in the authors' code
    assert feats[0].min() >= 0
    assert logits.shape == (2, 100)


@pytest.mark.parametrize('name', ['resnet20', 'MobileNetV2'])
def test_backbone_trains(name):
    backbone, width, _, _ = ARCHS[name]
    model = build_classifier(backbone, width)
    model.init_weights()
    model.train()
    feats = model.backbone(torch.randn(2, 3, 32, 32))[0]
    feats.mean().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())


@pytest.mark.parametrize(
    'cfg',
    [
        dict(type='CifarResNet', arch='resnet18'),
        dict(type='CifarWideResNet', arch='wrn_28_10'),
        dict(type='CifarVGG', arch='vgg16'),
    ],
)
def test_unknown_arch_is_refused(cfg):
    with pytest.raises(KeyError, match='Unknown arch'):
        MODELS.build(dict(cfg, _scope_='mmpretrain'))
