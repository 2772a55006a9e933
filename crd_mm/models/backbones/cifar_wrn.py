"""Wide ResNets (Zagoruyko & Komodakis) as the CRD paper uses on CIFAR-100."""

from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, Sequential
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from .cifar_resnet import DEFAULT_INIT_CFG


class PreActBlock(BaseModule):
    """Pre-activation basic block: BN-ReLU-conv3x3, BN-ReLU-conv3x3.

    When the shape changes, the 1x1 projection shortcut reads the
    pre-activated input (BN-ReLU applied), otherwise the raw input is added,
    as in the original WRN code the CRD authors use.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first convolution.
        norm_cfg (dict): Normalisation layer config.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_cfg: dict):
        super().__init__()
        self.bn1 = build_norm_layer(norm_cfg, in_channels)[1]
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = build_norm_layer(norm_cfg, out_channels)[1]
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = None
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(act)
        out = self.conv2(self.relu(self.bn2(self.conv1(act))))
        return out + identity


@MODELS.register_module()
class CifarWideResNet(BaseBackbone):
    """The CRD paper's WRN-D-W for 32x32 inputs.

    A 3x3 stem convolution to 16 channels (no BN), three stages of
    ``(D - 4) / 6`` pre-activation blocks with widths 16W, 32W, 64W and
    strides 1, 2, 2, then a final BN and ReLU. A 32x32 input gives an 8x8
    map of C = 64W channels: 64 for wrn_16_1 / wrn_40_1, 128 for
    wrn_16_2 / wrn_40_2. Dropout is not used (the authors' rate is 0).

    Args:
        arch (str): One of ``'wrn_16_1'``, ``'wrn_16_2'``, ``'wrn_40_1'``,
            ``'wrn_40_2'``. Defaults to ``'wrn_40_2'``.
        norm_cfg (dict): Normalisation layer config. Defaults to BN.
        init_cfg (dict | list[dict], optional): Initialisation config;
            defaults to Kaiming-normal (fan-out) convolutions and unit BN, as
            the authors initialise.

    Returns:
        tuple[Tensor]: A single (B, 64W, H/4, W/4) feature map.
    """

    # arch: (depth, widen factor)
    arch_settings = {
        'wrn_16_1': (16, 1),
        'wrn_16_2': (16, 2),
        'wrn_40_1': (40, 1),
        'wrn_40_2': (40, 2),
    }

    def __init__(
        self, arch: str = 'wrn_40_2', norm_cfg: dict = dict(type='BN'), init_cfg=DEFAULT_INIT_CFG
    ):
        super().__init__(init_cfg)
        if arch not in self.arch_settings:
            raise KeyError(
                f'Unknown arch {arch!r} for {type(self).__name__}; '
                f'choose from {sorted(self.arch_settings)}.'
            )
        depth, widen = self.arch_settings[arch]
        num_blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        in_channels = 16
        for i, (width, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
            width *= widen
            blocks = []
            for j in range(num_blocks):
                blocks.append(PreActBlock(in_channels, width, stride if j == 0 else 1, norm_cfg))
                in_channels = width
            self.add_module(f'block{i + 1}', Sequential(*blocks))
        self.bn1 = build_norm_layer(norm_cfg, in_channels)[1]
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return (self.relu(self.bn1(x)),)
