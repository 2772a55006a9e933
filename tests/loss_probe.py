"""A test-only hook that makes one rank's training loss NaN at one iteration.

Loaded by test configs through ``custom_imports`` (tests/ on PYTHONPATH).
``PoisonRankHook(rank, iteration)`` fills the student's first parameter with
NaN on ``rank`` just before ``iteration`` (1-based): that rank's forward, and
so its loss, is NaN there, while the other ranks' losses of that iteration are
still finite (DDP averages the gradients only afterwards).
"""

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class PoisonRankHook(Hook):
    def __init__(self, rank, iteration):
        self.rank, self.iteration = rank, iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if get_rank() != self.rank or runner.iter + 1 != self.iteration:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        with torch.no_grad():
            next(model.student.parameters()).fill_(float('nan'))
