"""A test-only hook that records, per rank and iteration, what CRDMemoryBankHook's memories hold.

Loaded by test configs through ``custom_imports`` (tests/ on PYTHONPATH). Its
priority is above CRDMemoryBankHook's, so in ``after_train_iter`` it sees the
rows each loss staged before the hook applies them; the memories' state after
iteration t is recorded before iteration t + 1 and after training. Replicated
banks, bank shards (with their first row) and queues (entries, order) alike.
"""

import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def snapshot(memory) -> dict:
    """A CPU copy of one memory's state, tagged with its kind."""
    state = dict(
        kind=type(memory).__name__,
        student=memory.student.cpu().clone(),
        teacher=memory.teacher.cpu().clone(),
        normalizers=None if memory.normalizers is None else memory.normalizers.cpu().clone(),
    )
    if hasattr(memory, 'head'):  # a queue
        state.update(
            head=memory.head,
            sample_idx=memory.sample_idx.cpu().clone(),
            entry_labels=memory.entry_labels.cpu().clone(),
        )
    else:
        state.update(written=memory.written.cpu().clone(), start=getattr(memory, 'start', 0))
    return state


@HOOKS.register_module()
class MemoryProbeHook(Hook):
    priority = 'ABOVE_NORMAL'

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.records = []

    @staticmethod
    def _memories(runner):
        return next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook').banks

    def _close_previous(self, runner):
        if self.records and 'after' not in self.records[-1]:
            self.records[-1]['after'] = {n: snapshot(m) for n, m in self._memories(runner).items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._close_previous(runner)
        self.records.append(
            dict(
                iter=runner.iter, before={n: snapshot(m) for n, m in self._memories(runner).items()}
            )
        )

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.records[-1].update(
            indices=[int(s.sample_idx) for s in data_batch['data_samples']],
            staged={
                n: [tuple(t.cpu().clone() for t in s) for s in m._staged]
                for n, m in self._memories(runner).items()
            },
            losses={k: float(v) for k, v in outputs.items()},
        )

    def after_train(self, runner):
        self._close_previous(runner)
        torch.save(self.records, osp.join(self.out_dir, f'memory_probe_rank{get_rank()}.pth'))
