"""Distillation algorithms registered in mmrazor's MODELS registry."""

from .crossmodal_distill import CrossModalDistill
from .fpn_roi_teacher_distill import FpnRoITeacherDistill
from .multi_teacher_distill import MultiTeacherDistill

__all__ = ['CrossModalDistill', 'FpnRoITeacherDistill', 'MultiTeacherDistill']
