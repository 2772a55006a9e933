"""ResNets for 32x32 inputs as used in the CRD paper's CIFAR-100 benchmark.

Two families (Tian et al., ICLR 2020, models from HobbitLong/RepDistiller):

- :class:`CifarResNet`: the classic 6n+2 BasicBlock ResNets with three
  stages (resnet8 ... resnet110, and the 4x wider resnet8x4 / resnet32x4).
- :class:`CifarResNet50`: a Bottleneck ResNet-50 whose stem is a 3x3,
  stride-1 convolution without max-pool.

Both differ from mmpretrain's ``ResNet_CIFAR`` (different widths, stem and
stage layout), hence their own registry names.
"""

from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, Sequential
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

DEFAULT_INIT_CFG = [
    dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu'),
    dict(type='Constant', layer=['_BatchNorm', 'GroupNorm'], val=1, bias=0),
]


def _shortcut(in_channels: int, out_channels: int, stride: int, norm_cfg: dict) -> nn.Module:
    """1x1 projection shortcut, or ``None`` when the identity fits."""
    if stride == 1 and in_channels == out_channels:
        return None
    return Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        build_norm_layer(norm_cfg, out_channels)[1],
    )


class CifarBasicBlock(BaseModule):
    """Two 3x3 conv-BN layers with a residual connection, ReLU at the end.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first convolution. Defaults to 1.
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
    """

    expansion = 1

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, norm_cfg: dict = dict(type='BN')
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, out_channels)[1]
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, out_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarBottleneck(BaseModule):
    """1x1 - 3x3 - 1x1 bottleneck with 4x channel expansion.

    Args:
        in_channels (int): Input channels.
        mid_channels (int): Channels of the 3x3 convolution; the block
            outputs ``4 * mid_channels``.
        stride (int): Stride of the 3x3 convolution. Defaults to 1.
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
    """

    expansion = 4

    def __init__(
        self, in_channels: int, mid_channels: int, stride: int = 1, norm_cfg: dict = dict(type='BN')
    ):
        super().__init__()
        out_channels = mid_channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, mid_channels)[1]
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, mid_channels)[1]
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = build_norm_layer(norm_cfg, out_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_stage(
    block: type, in_channels: int, channels: int, num_blocks: int, stride: int, norm_cfg: dict
) -> Sequential:
    """Stack ``num_blocks`` blocks; only the first one changes resolution."""
    layers = []
    for i in range(num_blocks):
        layers.append(block(in_channels, channels, stride if i == 0 else 1, norm_cfg))
        in_channels = channels * block.expansion
    return Sequential(*layers)


@MODELS.register_module()
class CifarResNet(BaseBackbone):
    """The CRD paper's 6n+2 BasicBlock ResNets for 32x32 inputs.

    A 3x3 stem convolution (with BN and ReLU) is followed by three stages of
    ``n = (depth - 2) / 6`` BasicBlocks with strides 1, 2, 2; a 32x32 input
    gives an 8x8 final map. The map has gone through the last block's ReLU,
    as in the authors' code, so global average pooling gives their
    penultimate feature.

    =============================  ========  =====================  ======
    arch                           blocks n  widths (stem, stages)  C
    =============================  ========  =====================  ======
    resnet8/14/20/32/44/56/110     1 ... 18  16, (16, 32, 64)       64
    resnet8x4 / resnet32x4         1 / 5     32, (64, 128, 256)     256
    =============================  ========  =====================  ======

    Args:
        arch (str): One of the keys of :attr:`arch_settings`.
            Defaults to ``'resnet20'``.
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialisation config;
            defaults to Kaiming-normal (fan-out) convolutions and unit BN, as
            the authors initialise.

    Returns:
        tuple[Tensor]: A single (B, C, H/4, W/4) feature map, C as above.
    """

    # arch: (blocks per stage, stem width, stage widths)
    arch_settings = {
        'resnet8': (1, 16, (16, 32, 64)),
        'resnet14': (2, 16, (16, 32, 64)),
        'resnet20': (3, 16, (16, 32, 64)),
        'resnet32': (5, 16, (16, 32, 64)),
        'resnet44': (7, 16, (16, 32, 64)),
        'resnet56': (9, 16, (16, 32, 64)),
        'resnet110': (18, 16, (16, 32, 64)),
        'resnet8x4': (1, 32, (64, 128, 256)),
        'resnet32x4': (5, 32, (64, 128, 256)),
    }

    def __init__(
        self, arch: str = 'resnet20', norm_cfg: dict = dict(type='BN'), init_cfg=DEFAULT_INIT_CFG
    ):
        super().__init__(init_cfg)
        if arch not in self.arch_settings:
            raise KeyError(
                f'Unknown arch {arch!r} for {type(self).__name__}; '
                f'choose from {sorted(self.arch_settings)}.'
            )
        num_blocks, stem_width, widths = self.arch_settings[arch]
        self.conv1 = nn.Conv2d(3, stem_width, 3, padding=1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, stem_width)[1]
        self.relu = nn.ReLU(inplace=True)
        in_channels = stem_width
        for i, (width, stride) in enumerate(zip(widths, (1, 2, 2))):
            self.add_module(
                f'layer{i + 1}',
                _make_stage(CifarBasicBlock, in_channels, width, num_blocks, stride, norm_cfg),
            )
            in_channels = width

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return (x,)


@MODELS.register_module()
class CifarResNet50(BaseBackbone):
    """The CRD paper's Bottleneck ResNet-50 for 32x32 inputs (a teacher).

    Stem: one 3x3, stride-1 convolution to 64 channels with BN and ReLU, no
    max-pool. Four stages of (3, 4, 6, 3) Bottlenecks with widths 64, 128,
    256, 512 (outputs x4) and strides 1, 2, 2, 2; a 32x32 input gives a 4x4
    map. Feature width C = 2048 (after the last block's ReLU).

    Args:
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialisation config;
            defaults to Kaiming-normal (fan-out) convolutions and unit BN.

    Returns:
        tuple[Tensor]: A single (B, 2048, H/8, W/8) feature map.
    """

    stage_blocks = (3, 4, 6, 3)

    def __init__(self, norm_cfg: dict = dict(type='BN'), init_cfg=DEFAULT_INIT_CFG):
        super().__init__(init_cfg)
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, 64)[1]
        self.relu = nn.ReLU(inplace=True)
        in_channels = 64
        stages = zip(self.stage_blocks, (64, 128, 256, 512), (1, 2, 2, 2))
        for i, (n, width, stride) in enumerate(stages):
            self.add_module(
                f'layer{i + 1}',
                _make_stage(CifarBottleneck, in_channels, width, n, stride, norm_cfg),
            )
            in_channels = width * CifarBottleneck.expansion

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return (x,)
