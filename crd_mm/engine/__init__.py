"""Training and validation loops registered in mmrazor's LOOPS registry."""

from .crossmodal_distill_val_loop import CrossModalDistillValLoop
from .multi_teacher_distill_val_loop import MultiTeacherDistillValLoop

__all__ = ['CrossModalDistillValLoop', 'MultiTeacherDistillValLoop']
