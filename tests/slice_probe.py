"""Test-only modules for sharded-bank checkpoints (tests/test_sharded_checkpoints.py).

Loaded through ``custom_imports`` (tests/ on PYTHONPATH).

* ``PeakTensorHook``: measures, on every rank, the largest tensor that
  CRDMemoryBankHook's checkpoint code allocates while it saves (the per-rank
  writes and the rank-0 checkpoint entry) and while it resumes (the bank
  tensors in the loaded checkpoint, then the restore), next to the bytes of
  this rank's slice and of one read chunk; saved as ``peak_rank<r>.pth``.
  ``chunk_rows`` sets the rows read at once from slice files, so that a tiny
  bank has several chunks per slice.
* ``ProgressMetric``: a metric whose score follows a fixed sequence per
  evaluation (1, 3, 2, 4, 5, ...), so that ``save_best`` replaces its best
  checkpoint at known evaluations and keeps it at the third.
"""

import os
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, METRICS
from torch.utils._python_dispatch import TorchDispatchMode

import crd_mm.memory.sharded as sharded


class LargestAllocation(TorchDispatchMode):
    """The largest storage (bytes) that an op creates while active (views and mmap'd files not)."""

    def __init__(self):
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.set_.source_Storage_storage_offset:
            return out  # a tensor on an existing (here: memory-mapped) storage
        inputs = {
            t.untyped_storage().data_ptr()
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.peak = max(self.peak, t.untyped_storage().nbytes())
        return out


def tensor_bytes(obj) -> int:
    """The largest tensor (bytes) anywhere in a nested checkpoint entry."""
    leaves = torch.utils._pytree.tree_leaves(obj)
    return max([t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor)] or [0])


@HOOKS.register_module()
class PeakTensorHook(Hook):
    priority = 'ABOVE_NORMAL'  # before CRDMemoryBankHook: wraps it before it restores

    def __init__(self, out_dir, chunk_rows):
        self.out_dir = out_dir
        sharded.CHECKPOINT_CHUNK_ROWS = chunk_rows
        self.peaks = dict(save=0, resume=0)
        self.slice_bytes = self.chunk_bytes = None

    def _track(self, hook, method, phase):
        real = getattr(hook, method)

        def tracked(*args, **kwargs):
            with LargestAllocation() as mode:
                result = real(*args, **kwargs)
            self.peaks[phase] = max(self.peaks[phase], mode.peak)
            return result

        setattr(hook, method, tracked)

    def after_load_checkpoint(self, runner, checkpoint):
        # what every rank holds of the banks once mmengine has loaded the checkpoint
        self.peaks['resume'] = tensor_bytes(checkpoint.get('crd_memory_banks'))

    def before_train(self, runner):
        hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
        self._track(hook, '_gather_for_checkpoint', 'save')
        self._track(hook, 'before_save_checkpoint', 'save')
        self._track(hook, '_restore', 'resume')
        self._hook = hook

    def after_train(self, runner):
        bank = next(iter(self._hook.banks.values()))
        row = bank.feat_dim * bank.student.element_size()
        torch.save(
            dict(
                peaks=self.peaks,
                slice_bytes=bank.student.shape[0] * row,
                chunk_bytes=sharded.CHECKPOINT_CHUNK_ROWS * row,
            ),
            osp.join(self.out_dir, f'peak_rank{get_rank()}.pth'),
        )


@METRICS.register_module()
class ProgressMetric(BaseMetric):
    SCORES = (1, 3, 2, 4, 5)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        self.calls += 1
        score = self.SCORES[self.calls - 1] if self.calls <= len(self.SCORES) else self.calls + 1
        return dict(progress=score)


@HOOKS.register_module()
class SliceStoreProbeHook(Hook):
    """On rank 0, before every iteration and after training: checkpoints and slice folders.

    Runs after CRDMemoryBankHook (which removes unreferenced folders before an iteration);
    records the checkpoint files, the folders in ``crd_memory/`` and the folders each
    checkpoint refers to (read here from the files), saved as ``store_probe.pth``.
    """

    priority = 'LOW'

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.records = []

    def _record(self, runner):
        if get_rank() != 0:
            return
        work_dir = runner.work_dir
        checkpoints = sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
        store = osp.join(work_dir, 'crd_memory')
        folders = sorted(os.listdir(store)) if osp.isdir(store) else []
        refers = {}
        for name in checkpoints:
            banks = torch.load(osp.join(work_dir, name), map_location='cpu')['crd_memory_banks']
            refers[name] = sorted(
                {entry['per_rank_files'].split('/')[1] for entry in banks.values()}
            )
        self.records.append(
            dict(iter=runner.iter, checkpoints=checkpoints, folders=folders, refers=refers)
        )

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._record(runner)

    def after_train(self, runner):
        self._record(runner)
        if get_rank() == 0:
            torch.save(self.records, osp.join(self.out_dir, 'store_probe.pth'))
