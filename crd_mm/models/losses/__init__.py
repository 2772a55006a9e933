"""Contrastive distillation losses, registered in mmrazor's MODELS registry."""

from .ckd_loss import CKDLoss
from .crcd_loss import CRCDLoss
from .crd_loss import CRDLoss
from .dcd_loss import DCDLoss

__all__ = ['CRDLoss', 'DCDLoss', 'CRCDLoss', 'CKDLoss']
