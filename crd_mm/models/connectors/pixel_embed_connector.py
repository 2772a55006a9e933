"""A dense embedding head (1x1 convolution + per-pixel L2 normalisation) as an mmrazor connector."""

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmrazor.models.architectures.connectors.base_connector import BaseConnector
from mmrazor.registry import MODELS
from torch import nn


@MODELS.register_module()
class PixelEmbedConnector(BaseConnector):
    """Conv2d(dim_in, dim_out, 1) with bias, then L2 normalisation of every pixel's vector.

    The dense counterpart of ``CRDConnector``: it keeps the spatial map, so
    ``PixelCRDLoss`` can contrast pixels. Accepts a (B, C, H, W) map or a
    tuple/list whose last element is one (what a backbone returns, or what a
    ``ModuleInputs`` recorder records).

    Args:
        dim_in (int): C, the channel count of the recorded feature map.
        dim_out (int): embedding width. Defaults to 128.
        init_cfg (dict, optional): as in ``BaseConnector``. Defaults to None.
    """

    def __init__(self, dim_in: int, dim_out: int = 128, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.dim_in = dim_in
        self.conv = nn.Conv2d(dim_in, dim_out, 1)

    def forward_train(self, feature: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        if isinstance(feature, (tuple, list)):
            feature = feature[-1]
        if feature.dim() != 4 or feature.shape[1] != self.dim_in:
            raise ValueError(
                f'PixelEmbedConnector(dim_in={self.dim_in}) needs a (B, {self.dim_in}, H, W) '
                f'feature map, got shape {tuple(feature.shape)}; record a spatial layer and set '
                'dim_in to its channel count'
            )
        return F.normalize(self.conv(feature), dim=1)
