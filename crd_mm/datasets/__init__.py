"""Datasets registered in mmpretrain's DATASETS registry."""
from .digits import SklearnDigits

__all__ = ['SklearnDigits']
