"""CRD's embedding head as an mmrazor connector."""

from typing import Optional, Sequence, Union

import mmrazor.models  # noqa: F401  (register mmrazor's CRDConnector first, so that ours replaces it)
import torch
import torch.nn.functional as F
from mmrazor.models.architectures.connectors.base_connector import BaseConnector
from mmrazor.registry import MODELS
from torch import nn


@MODELS.register_module(force=True)
class CRDConnector(BaseConnector):
    """Linear(dim_in, dim_out) with bias, then L2 normalisation (CRD's embedding head).

    Accepts (B, C) features, (B, C, H, W) maps (average-pooled first) or a
    tuple/list whose last element is one of those (what mmpretrain necks and
    backbones return). Replaces mmrazor's connector of the same name, which
    only flattens its input, so a spatial map silently became a huge vector.

    Args:
        dim_in (int): C, the feature width of the recorded layer.
        dim_out (int): embedding width (128 in the paper).
    """

    def __init__(self, dim_in: int, dim_out: int = 128, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.dim_in = dim_in
        self.linear = nn.Linear(dim_in, dim_out)

    def forward_train(self, feature: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        if isinstance(feature, (tuple, list)):
            feature = feature[-1]
        if feature.dim() == 4:
            feature = F.adaptive_avg_pool2d(feature, 1).flatten(1)
        if feature.dim() != 2 or feature.shape[1] != self.dim_in:
            raise ValueError(
                f'CRDConnector(dim_in={self.dim_in}) got features of shape {tuple(feature.shape)}; '
                f'set dim_in to the channel count of the recorded layer ({feature.shape[1] if feature.dim() > 1 else "?"})'
            )
        return F.normalize(self.linear(feature), dim=1)
