"""The CRD paper's CIFAR networks, registered as mmpretrain backbones."""

from .cifar_mobilenet_v2 import CifarMobileNetV2
from .cifar_resnet import CifarResNet, CifarResNet50
from .cifar_shufflenet import CifarShuffleNetV1, CifarShuffleNetV2
from .cifar_vgg import CifarVGG
from .cifar_wrn import CifarWideResNet

__all__ = [
    'CifarResNet',
    'CifarResNet50',
    'CifarWideResNet',
    'CifarVGG',
    'CifarMobileNetV2',
    'CifarShuffleNetV1',
    'CifarShuffleNetV2',
]
