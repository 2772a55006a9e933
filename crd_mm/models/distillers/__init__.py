"""Distillers registered in mmrazor's MODELS registry."""

from .multi_teacher_distiller import MultiTeacherDistiller

__all__ = ['MultiTeacherDistiller']
