"""VGG with batch norm for 32x32 inputs, as used in the CRD paper."""

from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import Sequential
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from .cifar_resnet import DEFAULT_INIT_CFG


@MODELS.register_module()
class CifarVGG(BaseBackbone):
    """The CRD paper's VGG-BN for 32x32 inputs (no fully connected layers).

    Five blocks of 3x3 conv (with bias) - BN - ReLU layers, with 2x2
    max-pools after the first three blocks only: on 32x32 inputs the
    authors skip the pool between blocks 4 and 5 and leave the spatial
    reduction to the global pool, so a 32x32 input gives a 4x4 map.
    Feature width C = 512 for every arch.

    ======  ===============================================
    arch    convs per block (widths 64, 128, 256, 512, 512)
    ======  ===============================================
    vgg8    1, 1, 1, 1, 1
    vgg11   1, 1, 2, 2, 2
    vgg13   2, 2, 2, 2, 2
    ======  ===============================================

    Args:
        arch (str): ``'vgg8'``, ``'vgg11'`` or ``'vgg13'``.
            Defaults to ``'vgg13'``.
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialisation config;
            defaults to Kaiming-normal (fan-out) convolutions with zero bias
            and unit BN, as the authors initialise.

    Returns:
        tuple[Tensor]: A single (B, 512, H/8, W/8) feature map.
    """

    widths = (64, 128, 256, 512, 512)
    arch_settings = {
        'vgg8': (1, 1, 1, 1, 1),
        'vgg11': (1, 1, 2, 2, 2),
        'vgg13': (2, 2, 2, 2, 2),
    }
    num_pooled_blocks = 3

    def __init__(
        self, arch: str = 'vgg13', norm_cfg: dict = dict(type='BN'), init_cfg=DEFAULT_INIT_CFG
    ):
        super().__init__(init_cfg)
        if arch not in self.arch_settings:
            raise KeyError(
                f'Unknown arch {arch!r} for {type(self).__name__}; '
                f'choose from {sorted(self.arch_settings)}.'
            )
        in_channels = 3
        layers = []
        for i, (num_convs, width) in enumerate(zip(self.arch_settings[arch], self.widths)):
            for _ in range(num_convs):
                layers += [
                    nn.Conv2d(in_channels, width, 3, padding=1),
                    build_norm_layer(norm_cfg, width)[1],
                    nn.ReLU(inplace=True),
                ]
                in_channels = width
            if i < self.num_pooled_blocks:
                layers.append(nn.MaxPool2d(2, stride=2))
        self.features = Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.features(x),)
