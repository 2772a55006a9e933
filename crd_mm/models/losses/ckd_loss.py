"""CKD: sample-wise contrastive alignment of student and teacher logits."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmrazor.registry import MODELS

from .dcd_loss import check_paired_batch


@MODELS.register_module()
class CKDLoss(nn.Module):
    """Contrastive Knowledge Distillation loss on logits.

    Zhu et al., CKD: Contrastive Knowledge Distillation from a sample-wise
    perspective (2024), which aligns logits sample by sample. Both (B, C) logit
    matrices are L2-normalised per sample and ``S = t_hat @ s_hat^T`` is their
    (B, B) cosine matrix. Each
    teacher sample must pick its own student logits among the batch's:
    the loss is the cross-entropy of ``S / temperature`` against the
    diagonal, the other samples' student logits being the negatives. It has
    no learnable parameters. This is the authors' loss (ZhouXinzzzzz/CKD, an
    mdistiller fork) term for term: row-normalised logits, teacher rows
    against student columns, cross-entropy of ``S / T`` with the batch mean,
    teacher logits without gradient; there is no deliberate difference.

    Args:
        loss_weight (float): Weight of the loss. The authors use 10 on
            ImageNet and 10 to 100 on CIFAR-100. Defaults to 1.0.
        temperature (float): Temperature dividing the cosine similarities.
            Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature must be positive, got {temperature}.')
        self.loss_weight = loss_weight
        self.temperature = temperature

    def forward(self, s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
        """Compute the weighted CKD loss.

        Args:
            s_logits (torch.Tensor): Student logits, shape (B, C).
            t_logits (torch.Tensor): Teacher logits, shape (B, C).

        Returns:
            torch.Tensor: The scalar loss.
        """
        check_paired_batch(s_logits, t_logits, 'CKDLoss')
        s_hat = F.normalize(s_logits, dim=1)
        t_hat = F.normalize(t_logits, dim=1)
        similarity = t_hat @ s_hat.t() / self.temperature
        targets = torch.arange(similarity.size(0), device=similarity.device)
        return self.loss_weight * F.cross_entropy(similarity, targets)
