"""ShuffleNetV1 / V2 for 32x32 inputs, the CRD paper's ShuffleNet students.

These CIFAR variants have a 1x1 stride-1 stem and no max-pool, so each of
the three stages halves a 32x32 input down to a 4x4 final map. They differ
from mmpretrain's ImageNet ``ShuffleNetV1`` / ``ShuffleNetV2``.
"""

from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, Sequential
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import channel_shuffle
from mmpretrain.registry import MODELS


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    norm_cfg: dict,
    stride: int = 1,
    groups: int = 1,
    relu: bool = True,
) -> Sequential:
    layers = [
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
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return Sequential(*layers)


class ShuffleV1Unit(BaseModule):
    """ShuffleNetV1 bottleneck: grouped 1x1, shuffle, depthwise 3x3, grouped
    1x1; added to the input (stride 1) or concatenated with its 3x3
    average-pooled copy (stride 2), then ReLU.

    Args:
        in_channels (int): Input channels.
        branch_channels (int): Output channels of the residual branch (the
            block outputs ``in_channels + branch_channels`` when stride is 2).
        stride (int): 1 or 2.
        groups (int): Groups of the 1x1 convolutions.
        first_groups (int): Groups of the first 1x1 convolution (1 in the
            network's very first unit, whose input has only 24 channels).
        norm_cfg (dict): Normalisation layer config.
    """

    def __init__(
        self,
        in_channels: int,
        branch_channels: int,
        stride: int,
        groups: int,
        first_groups: int,
        norm_cfg: dict,
    ):
        super().__init__()
        mid = branch_channels // 4
        self.stride = stride
        self.first_groups = first_groups
        self.conv1 = _conv_bn(in_channels, mid, 1, norm_cfg, groups=first_groups)
        self.conv2 = _conv_bn(mid, mid, 3, norm_cfg, stride=stride, groups=mid)
        self.conv3 = _conv_bn(mid, branch_channels, 1, norm_cfg, groups=groups, relu=False)
        self.relu = nn.ReLU(inplace=True)
        if stride == 2:
            self.shortcut = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.conv1(x), self.first_groups)
        out = self.conv3(self.conv2(out))
        if self.stride == 2:
            out = torch.cat([out, self.shortcut(x)], dim=1)
        else:
            out = out + x
        return self.relu(out)


@MODELS.register_module()
class CifarShuffleNetV1(BaseBackbone):
    """The CRD paper's ShuffleNetV1 (``ShuffleV1``: groups 3) for 32x32.

    Stem: 1x1 conv to 24 channels with BN and ReLU. Three stages of (4, 8, 4)
    units ending with 240, 480, 960 channels; the first unit of each stage
    has stride 2. Feature width C = 960 (after the last unit's ReLU).

    Args:
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to None (PyTorch's default init, as the authors use).

    Returns:
        tuple[Tensor]: A single (B, 960, H/8, W/8) feature map.
    """

    stage_channels = (240, 480, 960)
    stage_blocks = (4, 8, 4)
    groups = 3

    def __init__(self, norm_cfg: dict = dict(type='BN'), init_cfg=None):
        super().__init__(init_cfg)
        self.conv1 = _conv_bn(3, 24, 1, norm_cfg)
        in_channels = 24
        stages = zip(self.stage_channels, self.stage_blocks)
        for i, (out_channels, n) in enumerate(stages):
            units = []
            for j in range(n):
                first = j == 0
                units.append(
                    ShuffleV1Unit(
                        in_channels,
                        out_channels - in_channels if first else out_channels,
                        stride=2 if first else 1,
                        groups=self.groups,
                        first_groups=1 if i == 0 and first else self.groups,
                        norm_cfg=norm_cfg,
                    )
                )
                in_channels = out_channels
            self.add_module(f'layer{i + 1}', Sequential(*units))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return (x,)


class ShuffleV2DownUnit(BaseModule):
    """ShuffleNetV2 stride-2 unit: two branches, concatenated and shuffled.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels (half from each branch).
        norm_cfg (dict): Normalisation layer config.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict):
        super().__init__()
        mid = out_channels // 2
        depthwise = _conv_bn(
            in_channels, in_channels, 3, norm_cfg, stride=2, groups=in_channels, relu=False
        )
        self.left = Sequential(depthwise, _conv_bn(in_channels, mid, 1, norm_cfg))
        self.right = Sequential(
            _conv_bn(in_channels, mid, 1, norm_cfg),
            _conv_bn(mid, mid, 3, norm_cfg, stride=2, groups=mid, relu=False),
            _conv_bn(mid, mid, 1, norm_cfg),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1), 2)


class ShuffleV2Unit(BaseModule):
    """ShuffleNetV2 stride-1 unit: half the channels pass through, the other
    half go through 1x1 - depthwise 3x3 - 1x1; concatenated and shuffled.

    Args:
        channels (int): Input and output channels.
        norm_cfg (dict): Normalisation layer config.
    """

    def __init__(self, channels: int, norm_cfg: dict):
        super().__init__()
        half = channels // 2
        self.branch = Sequential(
            _conv_bn(half, half, 1, norm_cfg),
            _conv_bn(half, half, 3, norm_cfg, groups=half, relu=False),
            _conv_bn(half, half, 1, norm_cfg),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch(x2)], dim=1), 2)


@MODELS.register_module()
class CifarShuffleNetV2(BaseBackbone):
    """The CRD paper's ShuffleNetV2 (``ShuffleV2``, 1x width) for 32x32.

    Stem: 1x1 conv to 24 channels with BN and ReLU. Three stages, each one
    stride-2 unit followed by (3, 7, 3) stride-1 units, with 116, 232, 464
    channels; then a 1x1 conv-BN-ReLU to the feature width C = 1024.

    Args:
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to None (PyTorch's default init, as the authors use).

    Returns:
        tuple[Tensor]: A single (B, 1024, H/8, W/8) feature map.
    """

    stage_channels = (116, 232, 464)
    stage_blocks = (3, 7, 3)
    out_channels = 1024

    def __init__(self, norm_cfg: dict = dict(type='BN'), init_cfg=None):
        super().__init__(init_cfg)
        self.conv1 = _conv_bn(3, 24, 1, norm_cfg)
        in_channels = 24
        stages = zip(self.stage_channels, self.stage_blocks)
        for i, (channels, n) in enumerate(stages):
            units = [ShuffleV2DownUnit(in_channels, channels, norm_cfg)]
            units += [ShuffleV2Unit(channels, norm_cfg) for _ in range(n)]
            self.add_module(f'layer{i + 1}', Sequential(*units))
            in_channels = channels
        self.conv2 = _conv_bn(in_channels, self.out_channels, 1, norm_cfg)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return (self.conv2(x),)
