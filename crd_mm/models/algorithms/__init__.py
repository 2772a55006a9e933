"""Distillation algorithms registered in mmrazor's MODELS registry."""
from .fpn_roi_teacher_distill import FpnRoITeacherDistill

__all__ = ['FpnRoITeacherDistill']
