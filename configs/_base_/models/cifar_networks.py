# The CIFAR networks of the CRD paper's benchmark, each as what it sets in a
# `cifar_classifier.py` model: its `backbone` and `head.in_channels`, the width
# C of its pooled penultimate feature (listed in each backbone's docstring).
# Distillation recipes pick their two networks here, e.g.
#   model = dict(architecture=_base_.cifar_networks.resnet20,
#                teacher=_base_.cifar_networks.resnet110, ...)
# and write the widths again where their method needs them (the connectors'
# `dim_in`, CRCD's gradient-relation channels).
cifar_networks = dict(
    resnet20=dict(backbone=dict(type='CifarResNet', arch='resnet20'), head=dict(in_channels=64)),
    resnet32=dict(backbone=dict(type='CifarResNet', arch='resnet32'), head=dict(in_channels=64)),
    resnet56=dict(backbone=dict(type='CifarResNet', arch='resnet56'), head=dict(in_channels=64)),
    resnet110=dict(backbone=dict(type='CifarResNet', arch='resnet110'), head=dict(in_channels=64)),
    resnet8x4=dict(backbone=dict(type='CifarResNet', arch='resnet8x4'), head=dict(in_channels=256)),
    resnet32x4=dict(
        backbone=dict(type='CifarResNet', arch='resnet32x4'), head=dict(in_channels=256)
    ),
    wrn_16_2=dict(
        backbone=dict(type='CifarWideResNet', arch='wrn_16_2'), head=dict(in_channels=128)
    ),
    wrn_40_1=dict(
        backbone=dict(type='CifarWideResNet', arch='wrn_40_1'), head=dict(in_channels=64)
    ),
    wrn_40_2=dict(
        backbone=dict(type='CifarWideResNet', arch='wrn_40_2'), head=dict(in_channels=128)
    ),
    vgg8=dict(backbone=dict(type='CifarVGG', arch='vgg8'), head=dict(in_channels=512)),
    vgg13=dict(backbone=dict(type='CifarVGG', arch='vgg13'), head=dict(in_channels=512)),
    resnet50=dict(backbone=dict(type='CifarResNet50'), head=dict(in_channels=2048)),
    mobilenetv2=dict(backbone=dict(type='CifarMobileNetV2'), head=dict(in_channels=1280)),
    shufflenetv1=dict(backbone=dict(type='CifarShuffleNetV1'), head=dict(in_channels=960)),
    shufflenetv2=dict(backbone=dict(type='CifarShuffleNetV2'), head=dict(in_channels=1024)),
)
