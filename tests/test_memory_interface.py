"""The declared memory interface: the hook builds, syncs, saves and resumes any registered memory.

A fourth memory, written here and registered in ``MEMORIES`` (as a pixel queue for
segmentation would be), runs under ``CRDMemoryBankHook`` in a real Runner without
any change to the hook: built from its loss's spec, updated every iteration, written
into checkpoints and restored exactly on resume.
"""

import torch
import torch.nn.functional as F
from mmengine.runner import Runner
from mmrazor.registry import MODELS
from tiny_configs import crd_config, distill_config
from torch import nn

from crd_mm.memory import (
    MEMORIES,
    BaseContrastMemory,
    ContrastMemoryBank,
    ContrastQueue,
    MemoryBankClient,
    ShardedMemoryBank,
)

FEAT_DIM = 16


@MEMORIES.register_module(force=True)
class RunningMeanMemory(BaseContrastMemory):
    """Test memory: the running mean of every teacher embedding seen so far."""

    kind = 'running_mean'

    def __init__(self, feat_dim, device):
        self.total = torch.zeros(feat_dim, dtype=torch.float64, device=device)
        self.count = 0
        self._staged = []

    @classmethod
    def from_spec(cls, spec, num_samples, labels, device, dtype, seed):
        return cls(spec['feat_dim'], device)

    def reseed(self, iteration):
        pass

    def stage(self, teacher):
        self._staged.append(teacher.detach().double())

    def apply_staged(self):
        for rows in self._staged:
            self.total += rows.sum(0)
            self.count += rows.shape[0]
        self._staged = []
        return dict(count=float(self.count))

    def mean(self):
        return self.total / max(self.count, 1)

    def fingerprint(self):
        return torch.cat([self.total, self.total.new_tensor([self.count])])

    def state_dict(self):
        return dict(kind=self.kind, total=self.total.cpu(), count=self.count)

    def load_state_dict(self, state, name='memory'):
        self.total = state['total'].to(self.total.device)
        self.count = state['count']


@MODELS.register_module(force=True)
class MeanMatchLoss(nn.Module, MemoryBankClient):
    """Test loss: pulls student embeddings towards the teacher's running mean embedding."""

    def __init__(self, feat_dim=FEAT_DIM):
        super().__init__()
        self.feat_dim = feat_dim

    def bank_requirements(self):
        return dict(memory='RunningMeanMemory', feat_dim=self.feat_dim, needs_labels=False)

    def forward(self, s_feats, t_feats):
        memory = self.require_memory_bank()
        memory.stage(t_feats)
        target = memory.mean().to(s_feats.dtype).expand_as(s_feats)
        return F.mse_loss(s_feats, target)


def mean_match_config(data_root, work_dir, max_epochs):
    distiller = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        distill_losses=dict(loss_mean=dict(type='MeanMatchLoss')),
        connectors=dict(
            s=dict(type='CRDConnector', dim_in=16, dim_out=FEAT_DIM),
            t=dict(type='CRDConnector', dim_in=32, dim_out=FEAT_DIM),
        ),
        loss_forward_mappings=dict(
            loss_mean=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='s'),
                t_feats=dict(from_student=False, recorder='feat', connector='t'),
            )
        ),
    )
    return distill_config(data_root, work_dir, distiller, max_epochs=max_epochs)


def hook_of(runner):
    return next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')


def test_built_in_memories_are_registered_subclasses_of_the_declared_base():
    for cls in (ContrastMemoryBank, ShardedMemoryBank, ContrastQueue):
        assert issubclass(cls, BaseContrastMemory)
        assert MEMORIES.get(cls.__name__) is cls


def test_a_registered_fourth_memory_trains_saves_and_resumes_under_the_unchanged_hook(
    make_imagefolder, tmp_path
):
    data = make_imagefolder(tmp_path / 'data')  # 8 images, 2 per iteration
    straight = Runner.from_cfg(mean_match_config(data, tmp_path / 'straight', 2))
    straight.train()
    memory = hook_of(straight).banks['distiller.distill_losses.loss_mean']
    assert isinstance(memory, RunningMeanMemory)
    assert memory.count == 2 * 8  # every teacher embedding of both epochs was applied

    checkpoint = torch.load(tmp_path / 'straight' / 'epoch_1.pth', weights_only=False)
    saved = checkpoint['crd_memory_banks']['distiller.distill_losses.loss_mean']
    assert saved['kind'] == 'running_mean' and saved['count'] == 8

    cfg = mean_match_config(data, tmp_path / 'straight', 2)
    cfg.resume, cfg.load_from = True, str(tmp_path / 'straight' / 'epoch_1.pth')
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    again = hook_of(resumed).banks['distiller.distill_losses.loss_mean']
    assert again.count == memory.count
    torch.testing.assert_close(again.total, memory.total, rtol=0, atol=0)


def test_resuming_a_bank_checkpoint_with_a_queue_names_both_kinds(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data')
    Runner.from_cfg(crd_config(data, tmp_path / 'bank', max_epochs=1)).train()
    cfg = crd_config(
        data, tmp_path / 'queue', max_epochs=2, loss_cfg=dict(memory='queue', queue_size=4)
    )
    cfg.resume, cfg.load_from = True, str(tmp_path / 'bank' / 'epoch_1.pth')
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
    except ValueError as error:
        assert "'bank'" in str(error) and "'queue'" in str(error)
    else:
        raise AssertionError('a bank checkpoint resumed into a queue must be refused')
