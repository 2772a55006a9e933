"""StopOnNonFiniteLossHook: a run whose loss turns NaN or infinite stops at that iteration."""

import math
from typing import Optional

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

HINT = (
    'A diverging run: lower the learning rate (optim_wrapper.optimizer.lr), clip gradients '
    '(optim_wrapper.clip_grad=dict(max_norm=...)), lower the loss_weight of the terms named '
    "above, or check this batch's inputs for NaN/inf values. To train on regardless: "
    '--cfg-options default_hooks.stop_on_non_finite_loss.warn_only=True'
)


class NonFiniteLossError(FloatingPointError):
    """Raised by :class:`StopOnNonFiniteLossHook` when a training loss is NaN or infinite.

    Besides the message, it keeps the 1-based ``iteration`` and ``epoch`` of the
    step that went wrong and ``terms``, the non-finite entries of this rank's
    ``log_vars`` (name -> float, or a CPU tensor for a non-scalar entry), for
    callers that report the failure; it pickles (e.g. out of a worker process).
    """

    def __init__(self, message, iteration=None, epoch=None, terms=None):
        super().__init__(message)
        self.iteration, self.epoch, self.terms = iteration, epoch, dict(terms or {})


def _is_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return True  # not a number: nothing to check


def _plain(value):
    """A float for a scalar tensor, a detached CPU copy for others: picklable, holds no graph."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.item() if value.numel() == 1 else value.cpu()
    return value


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        bad = int((~torch.isfinite(value)).sum())
        return f'{bad} of {value.numel()} values non-finite'
    return f'{value}'


@HOOKS.register_module()
class StopOnNonFiniteLossHook(Hook):
    """Stops training, every iteration it happens, as soon as a loss is NaN or infinite.

    After each training iteration it reads ``outputs``, the ``log_vars`` dict
    the model's ``train_step`` returned (the total ``loss`` and every term),
    and raises :class:`NonFiniteLossError` naming the iteration and every
    non-finite entry, with a hint, if any entry whose name contains ``loss``
    (the ones mmengine sums into the total) is not finite. The update of that
    iteration has been applied, so the weights are already damaged: stopping
    keeps a NaN run from passing for a result and from overwriting good
    checkpoints. The error is also written to the run's log.

    Unlike mmdet's ``CheckInvalidLossHook`` (total loss only, every
    ``interval`` iterations, an ``assert`` that ``python -O`` removes) it checks
    every iteration and names the terms. Its priority (``LOW``) runs it after
    the ``LoggerHook``, so a due log line still shows the bad values, and
    before the ``CheckpointHook``, so no checkpoint of damaged weights is
    saved. In distributed runs the ranks agree through one small all-reduce
    per iteration, so they all stop together rather than leave the healthy
    ranks waiting in a collective.

    Args:
        warn_only (bool): Log the first non-finite iteration as an error and
            train on instead of raising (mmengine's default hooks cannot be
            removed by setting them to None). Defaults to False.
    """

    priority = 'LOW'

    def __init__(self, warn_only: bool = False) -> None:
        self.warn_only = warn_only
        self._warned = False

    def after_train_iter(
        self, runner, batch_idx: int, data_batch=None, outputs: Optional[dict] = None
    ) -> None:
        """Raise :class:`NonFiniteLossError` if a loss in ``outputs`` is NaN or infinite.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): Index of the batch in the current epoch.
            data_batch (dict, optional): The batch. Defaults to None.
            outputs (dict, optional): The ``log_vars`` returned by the model's
                ``train_step``. Defaults to None (nothing is checked).
        """
        terms = {}
        if isinstance(outputs, dict):
            terms = {name: _plain(v) for name, v in outputs.items() if not _is_finite(v)}
        local_bad = any('loss' in name for name in terms)
        bad_ranks = self._ranks_with_non_finite_loss(local_bad)
        if not bad_ranks:
            return
        iteration = runner.iter + 1  # the loop counts this iteration after its hooks
        where = f'iteration {iteration} of {runner.max_iters}'
        epoch = None
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            epoch = runner.epoch + 1
            where += f' (epoch {epoch}, batch {batch_idx + 1})'
        if local_bad:
            what = 'non-finite: ' + ', '.join(f'{k}={_describe(v)}' for k, v in terms.items())
        else:
            what = 'its losses are finite'
        world_size = dist.get_world_size()
        if world_size > 1:
            what = (
                f'rank {dist.get_rank()} of {world_size}: {what}; ranks with a non-finite loss: '
                f'{bad_ranks}'
            )
        if self.warn_only:
            if not self._warned:
                runner.logger.error(
                    f'The loss is not finite at {where} ({what}); training goes on '
                    '(warn_only=True), later iterations are not reported.'
                )
            self._warned = True
            return
        message = f'Training stopped at {where}: the loss is not finite ({what}). {HINT}'
        runner.logger.error(message)
        raise NonFiniteLossError(message, iteration=iteration, epoch=epoch, terms=terms)

    @staticmethod
    def _ranks_with_non_finite_loss(local_bad: bool) -> list:
        """The ranks (all of them agreeing) whose losses were not finite this iteration."""
        world_size = dist.get_world_size()
        if world_size == 1:
            return [0] if local_bad else []
        flags = torch.zeros(world_size)
        flags[dist.get_rank()] = float(local_bad)
        dist.all_reduce(flags)  # mmengine moves it to the backend's device and back
        return [rank for rank, flag in enumerate(flags.tolist()) if flag]
