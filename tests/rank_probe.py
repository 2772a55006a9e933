"""Test-only modules for multi-process bank tests.

Loaded through ``custom_imports`` (tests/ on PYTHONPATH).

* ``FixedOrderSampler``: every rank iterates its own fixed list of dataset
  indices, so a test can put the same index on several ranks (and twice on
  one rank) inside one gathered batch.
* ``AddPixelNoise``: uniform pixel noise from numpy's global generator, which
  mmengine seeds per rank with ``diff_rank_seed=True``: two occurrences of one
  index then give different embeddings, so "which occurrence won" is visible.
* ``EmbeddingProbeHook``: records, on every rank, the initial banks, the
  connectors' embeddings, the batch indices, the banks before and after each
  iteration and the negative sampler's state, and saves them at the end.
"""

import os.path as osp

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DATA_SAMPLERS, HOOKS
from mmpretrain.registry import TRANSFORMS


@DATA_SAMPLERS.register_module()
class FixedOrderSampler:
    def __init__(self, dataset, per_rank, seed=None):
        self.indices = list(per_rank[get_rank()])

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        pass


@TRANSFORMS.register_module()
class AddPixelNoise:
    def __init__(self, amplitude=40):
        self.amplitude = amplitude

    def __call__(self, results):
        noise = np.random.uniform(-self.amplitude, self.amplitude, results['img'].shape)
        results['img'] = np.clip(results['img'] + noise, 0, 255).astype(np.uint8)
        return results


@HOOKS.register_module()
class EmbeddingProbeHook(Hook):
    priority = (
        'LOW'  # after CRDMemoryBankHook: sees banks after build/restore and after each update
    )

    def __init__(self, out_dir, tag='probe'):
        self.out_dir = out_dir
        self.tag = tag
        self.records = []
        self.initial = None
        self._embeddings = {}

    def _banks(self, runner):
        return next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook').banks

    @staticmethod
    def _snapshot(banks):
        return {
            name: dict(
                student=b.student.cpu().clone(),
                teacher=b.teacher.cpu().clone(),
                written=b.written.cpu().clone(),
                normalizers=None if b.normalizers is None else b.normalizers.cpu().clone(),
            )
            for name, b in banks.items()
        }

    def before_train(self, runner):
        self.initial = self._snapshot(self._banks(runner))
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for name, connector in model.distiller.connectors.items():
            connector.register_forward_hook(
                lambda module, args, out, name=name: self._embeddings.__setitem__(
                    name, out.detach().cpu()
                )
            )

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        banks = self._banks(runner)
        self._before = self._snapshot(banks)
        self._sampler_states = {name: b.sampler.get_state().clone() for name, b in banks.items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.records.append(
            dict(
                iter=runner.iter,
                indices=[int(s.sample_idx) for s in data_batch['data_samples']],
                embeddings=dict(self._embeddings),
                before=self._before,
                after=self._snapshot(self._banks(runner)),
                sampler_states=self._sampler_states,
            )
        )

    def after_train(self, runner):
        torch.save(
            dict(initial=self.initial, records=self.records),
            osp.join(self.out_dir, f'{self.tag}_rank{get_rank()}.pth'),
        )
