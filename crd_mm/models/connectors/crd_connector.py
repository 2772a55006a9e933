"""CRD's embedding head as an mmrazor connector."""

from typing import Optional, Sequence, Union

import mmrazor.models  # noqa: F401  (register mmrazor's CRDConnector first, so that ours replaces it)
import torch
import torch.nn.functional as F
from mmrazor.models.architectures.connectors.base_connector import BaseConnector
from mmrazor.registry import MODELS
from torch import nn

from ..mmrazor_names import check_mmrazor_arguments


@MODELS.register_module(force=True)
class CRDConnector(BaseConnector):
    """Linear(dim_in, dim_out) with bias, then L2 normalisation (CRD's embedding head).

    Accepts (B, C) features, (B, C, H, W) maps (average-pooled first) or a
    tuple/list whose last element is one of those (what mmpretrain necks and
    backbones return).

    Registered in mmrazor's ``MODELS`` registry under mmrazor's own name with
    ``force=True``: once crd_mm is imported, every config that says
    ``type='CRDConnector'`` (mmrazor's own CRD config too) builds this class,
    not mmrazor's, which only flattens its input (a spatial map silently became
    a huge vector) and defaults ``dim_in`` to 1024. mmrazor's class stays
    importable from ``mmrazor.models.architectures.connectors``. The arguments
    are mmrazor's (``dim_in``, ``dim_out``, ``init_cfg``), but ``dim_in`` must
    be given; anything else is refused with an error that lists them.

    ``batch_norm=True`` (not in the paper) inserts ``BatchNorm1d(dim_out,
    affine=False)`` between the linear layer and the L2 normalisation: it
    removes the embeddings' common component, so that embeddings of different
    samples start spread over the sphere instead of inside one narrow cone.
    A ``memory='queue'`` CRD loss needs it: its negatives are the current
    embeddings within Q / B steps, and from the cone the NCE objective (Z fixed)
    falls into the point where every score equals T log(Z / K) and both heads
    emit one vector (docs/memory.md); banks escape it because their random
    initial rows spread the embeddings during the first epoch.

    Args:
        dim_in (int): C, the feature width of the recorded layer.
        dim_out (int): embedding width (128 in the paper). Defaults to 128.
        batch_norm (bool): centre and scale the embedding per dimension over the
            batch (running statistics in evaluation) before the L2 normalisation.
            Defaults to False (the paper's head).
        init_cfg (dict, optional): as in ``BaseConnector``. Defaults to None.
    """

    def __init__(
        self,
        dim_in: Optional[int] = None,
        dim_out: int = 128,
        batch_norm: bool = False,
        init_cfg: Optional[dict] = None,
        **kwargs,
    ):
        check_mmrazor_arguments(type(self), kwargs)
        if dim_in is None:
            raise ValueError(
                "CRDConnector needs dim_in=<channel count of the recorded feature> (mmrazor's "
                'CRDConnector defaulted it to 1024, which fits only a 1024-channel feature)'
            )
        super().__init__(init_cfg=init_cfg)
        self.dim_in = dim_in
        self.linear = nn.Linear(dim_in, dim_out)
        self.batch_norm = batch_norm
        self.norm = nn.BatchNorm1d(dim_out, affine=False) if batch_norm else nn.Identity()

    def forward_train(self, feature: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        if isinstance(feature, (tuple, list)):
            feature = feature[-1]
        if feature.dim() == 4:
            feature = F.adaptive_avg_pool2d(feature, 1).flatten(1)
        if feature.dim() != 2 or feature.shape[1] != self.dim_in:
            channels = feature.shape[1] if feature.dim() > 1 else '?'
            raise ValueError(
                f'CRDConnector(dim_in={self.dim_in}) got features of shape '
                f'{tuple(feature.shape)}; set dim_in to the channel count of the recorded '
                f'layer ({channels})'
            )
        return F.normalize(self.norm(self.linear(feature)), dim=1)
