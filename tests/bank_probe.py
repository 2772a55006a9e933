"""A test-only hook that records every rank's memory banks and batch indices per iteration.

Loaded by test configs through ``custom_imports`` (tests/ on PYTHONPATH). It runs
after CRDMemoryBankHook (lower priority) so it sees the banks after the update.
"""

import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class BankProbeHook(Hook):
    priority = 'LOW'

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.records = []

    def _banks(self, runner):
        hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
        return hook.banks

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._before = {
            name: (b.student.clone(), b.teacher.clone()) for name, b in self._banks(runner).items()
        }

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        banks = self._banks(runner)
        self.records.append(
            dict(
                iter=runner.iter,
                indices=[int(s.sample_idx) for s in data_batch['data_samples']],
                before=self._before,
                after={name: (b.student.clone(), b.teacher.clone()) for name, b in banks.items()},
                normalizers={name: b.normalizers.clone() for name, b in banks.items()},
                losses={k: float(v) for k, v in outputs.items()},
            )
        )

    def after_train(self, runner):
        torch.save(self.records, osp.join(self.out_dir, f'probe_rank{get_rank()}.pth'))
