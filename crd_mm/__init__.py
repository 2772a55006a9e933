"""crd_mm: contrastive representation distillation for mmrazor."""
from .version import __version__
