"""Contrastive distillation losses, registered in mmrazor's MODELS registry."""

from .cirkd_loss import CIRKDLoss
from .ckd_loss import CKDLoss
from .crcd_loss import CRCDLoss
from .crd_loss import CRDLoss
from .dcd_loss import DCDLoss
from .pixel_crd_loss import PixelCRDLoss

__all__ = ['CRDLoss', 'DCDLoss', 'CRCDLoss', 'CKDLoss', 'PixelCRDLoss', 'CIRKDLoss']
