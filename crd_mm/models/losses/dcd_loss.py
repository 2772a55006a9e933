"""DCD: in-batch contrastive distillation with a learnable scale and consistency term."""

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmrazor.registry import MODELS


def check_paired_batch(s_feats: torch.Tensor, t_feats: torch.Tensor, loss_name: str) -> None:
    """Raise a clear error unless both inputs are (B, D) with B >= 2.

    The in-batch contrastive losses use the other samples of the batch as
    negatives, so they need matching shapes and at least two samples.
    """
    if s_feats.dim() != 2 or s_feats.shape != t_feats.shape:
        raise ValueError(
            f'{loss_name} expects student and teacher inputs of the same '
            f'shape (B, D), got {tuple(s_feats.shape)} and '
            f'{tuple(t_feats.shape)}.'
        )
    if s_feats.size(0) < 2:
        raise ValueError(
            f'{loss_name} contrasts each sample against the other samples '
            'of the batch, so it needs a batch of at least 2 (got 1); '
            'raise the per-GPU batch size.'
        )


@MODELS.register_module()
class DCDLoss(nn.Module):
    """Discriminative and Consistent Distillation loss.

    Giakoumoglou and Stathaki, "Discriminative and Consistent Representation
    Distillation", arXiv:2407.11802 (2024). The student and teacher
    embeddings (L2-normalised, e.g. from two ``CRDConnector`` heads) give the
    logits ``L = z_s @ z_t^T * min(exp(tau), max_logit_scale) + b``. The loss
    is the cross-entropy of each row of ``L`` against its diagonal (the other
    samples of the batch are the negatives) plus ``consistency_weight`` times
    ``KL(q_i || p_i)`` averaged over rows, with ``p_i`` the softmax of row
    ``i`` and ``q_i`` the softmax of column ``i``; neither side is detached.
    This is the authors' loss (giakoumoglou/distillers) term for term.

    ``tau`` and ``b`` are learnable scalars trained with the model, as the
    paper and the authors' older CIFAR script have it
    (``learnable_logit_scale=True``). The authors' current ImageNet script
    never hands them to its optimiser, so there they stay at tau = 1, b = 0;
    ``learnable_logit_scale=False`` reproduces that: they are then buffers,
    not parameters, so no optimiser (nor weight decay) touches them, and
    checkpoints keep the same keys. Our ImageNet DCD recipes use False.

    The bias ``b`` shifts every logit equally and cancels in each softmax, so
    its gradient is zero; it is kept because the authors' model has it.

    Args:
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        init_temperature (float): Initial ``tau``; the logit scale is
            ``exp(tau)``. Defaults to 1.0.
        init_bias (float): Initial ``b``. Defaults to 0.0.
        max_logit_scale (float): Upper clamp of ``exp(tau)``. Defaults to 10.
        consistency_weight (float): Weight of the consistency (KL) term.
            Defaults to 0.5.
        learnable_logit_scale (bool): Train ``tau`` and ``b`` (True) or keep
            them fixed at their initial values (False, the authors'
            ImageNet script). Defaults to True.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        init_temperature: float = 1.0,
        init_bias: float = 0.0,
        max_logit_scale: float = 10.0,
        consistency_weight: float = 0.5,
        learnable_logit_scale: bool = True,
    ) -> None:
        super().__init__()
        if max_logit_scale <= 0:
            raise ValueError(f'max_logit_scale must be positive, got {max_logit_scale}.')
        self.loss_weight = loss_weight
        self.max_logit_scale = max_logit_scale
        self.consistency_weight = consistency_weight
        self.learnable_logit_scale = learnable_logit_scale
        tau = torch.tensor(float(init_temperature))
        bias = torch.tensor(float(init_bias))
        if learnable_logit_scale:
            self.tau, self.bias = nn.Parameter(tau), nn.Parameter(bias)
        else:
            self.register_buffer('tau', tau)
            self.register_buffer('bias', bias)

    def logits(self, s_embeds: torch.Tensor, t_embeds: torch.Tensor) -> torch.Tensor:
        """The (B, B) logits: row i scores student i against every teacher."""
        scale = self.tau.exp().clamp(max=self.max_logit_scale)
        return s_embeds @ t_embeds.t() * scale + self.bias

    def loss_terms(
        self, s_embeds: torch.Tensor, t_embeds: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return the unweighted (contrastive, consistency) terms.

        Args:
            s_embeds (torch.Tensor): Student embeddings, shape (B, D).
            t_embeds (torch.Tensor): Teacher embeddings, shape (B, D).
        """
        check_paired_batch(s_embeds, t_embeds, 'DCDLoss')
        logits = self.logits(s_embeds, t_embeds)
        targets = torch.arange(logits.size(0), device=logits.device)
        contrastive = F.cross_entropy(logits, targets)
        log_p = F.log_softmax(logits, dim=1)
        log_q = F.log_softmax(logits, dim=0).t()
        consistency = F.kl_div(log_p, log_q, reduction='batchmean', log_target=True)
        return contrastive, consistency

    def forward(self, s_embeds: torch.Tensor, t_embeds: torch.Tensor) -> torch.Tensor:
        """Compute the weighted DCD loss.

        Args:
            s_embeds (torch.Tensor): L2-normalised student embeddings (B, D).
            t_embeds (torch.Tensor): L2-normalised teacher embeddings (B, D).

        Returns:
            torch.Tensor: The scalar loss.
        """
        contrastive, consistency = self.loss_terms(s_embeds, t_embeds)
        return self.loss_weight * (contrastive + self.consistency_weight * consistency)
