"""Training and validation loops (mmrazor's LOOPS) and training hooks (mmengine's HOOKS)."""

from .crossmodal_distill_val_loop import CrossModalDistillValLoop
from .multi_teacher_distill_val_loop import MultiTeacherDistillValLoop
from .stop_on_non_finite_loss_hook import NonFiniteLossError, StopOnNonFiniteLossHook

__all__ = [
    'CrossModalDistillValLoop',
    'MultiTeacherDistillValLoop',
    'NonFiniteLossError',
    'StopOnNonFiniteLossHook',
]
