"""MobileNetV2 for 32x32 inputs, the CRD paper's ``MobileNetV2`` student."""

from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, Sequential
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from .cifar_resnet import DEFAULT_INIT_CFG


def _conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    norm_cfg: dict,
    groups: int = 1,
) -> Sequential:
    return Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        build_norm_layer(norm_cfg, out_channels)[1],
        nn.ReLU(inplace=True),
    )


class CifarInvertedResidual(BaseModule):
    """Expand (1x1) - depthwise 3x3 - project (1x1) block with ReLU.

    Unlike torchvision's block, the 1x1 expansion is kept when the expand
    ratio is 1 and the activation is ReLU, not ReLU6 (the authors' design).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the depthwise convolution.
        expand_ratio (int): Hidden width is ``in_channels * expand_ratio``.
        norm_cfg (dict): Normalisation layer config.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, norm_cfg: dict
    ):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = Sequential(
            _conv_bn_relu(in_channels, hidden, 1, 1, norm_cfg),
            _conv_bn_relu(hidden, hidden, 3, stride, norm_cfg, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            build_norm_layer(norm_cfg, out_channels)[1],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


@MODELS.register_module()
class CifarMobileNetV2(BaseBackbone):
    """The CRD paper's MobileNetV2 (expansion 6, width multiplier 0.5).

    Stem: 3x3 stride-2 conv to ``int(32 * widen_factor)`` channels. Seven
    stages of inverted residuals ``(t, c, n, s)``: (1, 16, 1, 1),
    (T, 24, 2, 1), (T, 32, 3, 2), (T, 64, 4, 2), (T, 96, 3, 1),
    (T, 160, 3, 2), (T, 320, 1, 1) with T = ``expand_ratio`` and widths
    ``int(c * widen_factor)``, then a 1x1 conv-BN-ReLU to the feature width
    C = 1280 (``int(1280 * widen_factor)`` if ``widen_factor > 1``).
    A 32x32 input gives a 2x2 map.

    Args:
        expand_ratio (int): Expansion T of the inverted residuals.
            Defaults to 6.
        widen_factor (float): Width multiplier. Defaults to 0.5.
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialisation config;
            defaults to Kaiming-normal (fan-out) convolutions and unit BN, as
            the authors initialise.

    Returns:
        tuple[Tensor]: A single (B, 1280, H/16, W/16) feature map.
    """

    # (expand ratio or None for `expand_ratio`, channels, blocks, stride)
    stage_settings = [
        (1, 16, 1, 1),
        (None, 24, 2, 1),
        (None, 32, 3, 2),
        (None, 64, 4, 2),
        (None, 96, 3, 1),
        (None, 160, 3, 2),
        (None, 320, 1, 1),
    ]

    def __init__(
        self,
        expand_ratio: int = 6,
        widen_factor: float = 0.5,
        norm_cfg: dict = dict(type='BN'),
        init_cfg=DEFAULT_INIT_CFG,
    ):
        super().__init__(init_cfg)
        in_channels = int(32 * widen_factor)
        self.conv1 = _conv_bn_relu(3, in_channels, 3, 2, norm_cfg)
        stages = []
        for t, c, n, s in self.stage_settings:
            out_channels = int(c * widen_factor)
            ratio = t or expand_ratio
            blocks = []
            for i in range(n):
                blocks.append(
                    CifarInvertedResidual(
                        in_channels, out_channels, s if i == 0 else 1, ratio, norm_cfg
                    )
                )
                in_channels = out_channels
            stages.append(Sequential(*blocks))
        self.blocks = Sequential(*stages)
        last = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_channels, last, 1, 1, norm_cfg)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.conv2(self.blocks(self.conv1(x))),)
