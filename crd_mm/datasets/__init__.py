"""Datasets registered in mmpretrain's DATASETS registry."""

from . import transforms  # noqa: F401  (registers the cross-modal transforms)
from .digits import SklearnDigits

__all__ = ['SklearnDigits']
