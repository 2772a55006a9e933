"""crd_mm: contrastive representation distillation (CRD, DCD, CRCD, CKD) for mmrazor.

Importing the package (configs do it with ``custom_imports``) first applies the
compatibility patches that make the pinned OpenMMLab stack work on current
PyTorch, then registers crd_mm's models, memory-bank hook, loops and datasets.
"""

from . import (  # noqa: F401
    compat,  # noqa: F401  (must come first: mmrazor imports need it)
    datasets,
    engine,
    memory,
    models,
)
from .version import __version__

__all__ = ['__version__']
