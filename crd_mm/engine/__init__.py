"""Training and validation loops registered in mmrazor's LOOPS registry."""
from .crossmodal_distill_val_loop import CrossModalDistillValLoop

__all__ = ['CrossModalDistillValLoop']
