"""The bank engine is never silently wrong.

Fresh vs resumed banks, seeds, sampling statistics, half precision.
"""

import glob
import math
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from scipy import stats
from tiny_configs import crd_config

from crd_mm.memory import ContrastMemoryBank

BANK = 'distiller.distill_losses.loss_crd'


class BankSnapshot(Hook):
    """Records the banks as training starts (after CRDMemoryBankHook built and restored them)."""

    priority = 'LOW'

    def before_train(self, runner):
        hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
        bank = hook.banks[BANK]
        self.state = dict(
            student=bank.student.cpu().clone(),
            teacher=bank.teacher.cpu().clone(),
            written=bank.written.cpu().clone(),
            normalizers=bank.normalizers,
        )


def run_with_snapshot(cfg):
    runner = Runner.from_cfg(cfg)
    snapshot = BankSnapshot()
    runner.register_hook(snapshot)
    runner.train()
    return snapshot.state, runner


def load(path):
    return torch.load(path, map_location='cpu')


def log_text(runner):
    return ''.join(open(f).read() for f in glob.glob(osp.join(runner.log_dir, '*.log')))


def test_load_from_starts_fresh_banks_and_only_resume_restores_them(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    Runner.from_cfg(crd_config(data, tmp_path / 'first', max_epochs=1)).train()
    checkpoint = str(tmp_path / 'first' / 'epoch_1.pth')
    saved = load(checkpoint)['crd_memory_banks'][BANK]
    assert saved['written'].all() and saved['normalizers'] is not None

    # load_from (weights only): fresh banks, no constants, nothing written, and the log says so
    cfg = crd_config(data, tmp_path / 'finetune', max_epochs=1)
    cfg.load_from, cfg.log_level = checkpoint, 'INFO'
    fresh, runner = run_with_snapshot(cfg)
    assert not fresh['written'].any() and fresh['normalizers'] is None
    assert not torch.equal(fresh['student'], saved['student'])
    assert (
        'load_from loads weights only; the memory banks and normalisation constants start fresh'
        in log_text(runner)
    )

    # load_from into a run on another training set works (the banks are not restored, so no
    # size clash)
    bigger = make_imagefolder(tmp_path / 'bigger', num_classes=3, per_class=5)
    cfg = crd_config(bigger, tmp_path / 'other_data', max_epochs=1)
    cfg.load_from = checkpoint
    other, _ = run_with_snapshot(cfg)
    assert other['student'].shape[0] == 15

    # resume: everything restored
    cfg = crd_config(data, tmp_path / 'resumed', max_epochs=2)
    cfg.resume, cfg.load_from = True, checkpoint
    restored, _ = run_with_snapshot(cfg)
    for key in ('student', 'teacher', 'written', 'normalizers'):
        assert torch.equal(restored[key].cpu(), saved[key]), key


def test_initial_rows_do_not_depend_on_threads_or_device():
    """Drawn on the CPU in fixed chunks: one seed, same rows with 1 or 2 threads and on a GPU."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ContrastMemoryBank(1000, 16, 0.5, seed=3)
        torch.set_num_threads(2)
        two = ContrastMemoryBank(1000, 16, 0.5, seed=3)
    finally:
        torch.set_num_threads(threads)
    bound = 1 / math.sqrt(16 / 3)
    assert one.student.abs().max() <= bound and one.student.std() > bound / 2
    assert torch.equal(one.student, two.student) and torch.equal(one.teacher, two.teacher)
    assert not torch.equal(one.student, one.teacher)
    for device in ['cuda'] if torch.cuda.is_available() else []:
        on_device = ContrastMemoryBank(1000, 16, 0.5, seed=3, device=device)
        assert torch.equal(on_device.student.cpu(), one.student)


@pytest.mark.parametrize('anchor_class', [0, 2, 4])
def test_class_exact_negatives_are_uniform_over_the_other_classes_on_unbalanced_labels(
    anchor_class,
):
    """Chi-square goodness of fit: other-class samples equally likely, own class never drawn."""
    counts = [7, 1, 23, 4, 12]  # unbalanced, classes interleaved in the dataset order
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    bank = ContrastMemoryBank(len(labels), 8, 0.5, labels=torch.as_tensor(labels), seed=0)
    bank.reseed(0)
    anchors = torch.as_tensor(np.flatnonzero(labels == anchor_class)[:1]).repeat(40)
    draws = bank.negatives(anchors, 1000, 'class_exact', shared=False).flatten()
    hist = torch.bincount(draws, minlength=len(labels)).numpy()
    own = labels == anchor_class
    assert hist[own].sum() == 0
    others = hist[~own]
    assert (others > 0).all()
    assert stats.chisquare(others).pvalue > 1e-3, others


@pytest.mark.parametrize(
    'bank_dtype', ['float16', pytest.param('bfloat16', marks=pytest.mark.slow)]
)
def test_half_precision_banks_train_checkpoint_and_resume_exactly(
    make_imagefolder, tmp_path, bank_dtype
):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    hooks = [dict(type='CRDMemoryBankHook', bank_dtype=bank_dtype)]
    Runner.from_cfg(crd_config(data, tmp_path / 'straight', max_epochs=2, hooks=hooks)).train()
    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    shutil.copy(tmp_path / 'straight' / 'epoch_1.pth', resumed_dir / 'epoch_1.pth')
    cfg = crd_config(data, resumed_dir, max_epochs=2, hooks=hooks)
    cfg.resume, cfg.load_from = True, str(resumed_dir / 'epoch_1.pth')
    Runner.from_cfg(cfg).train()

    straight, resumed = (
        load(tmp_path / 'straight' / 'epoch_2.pth'),
        load(resumed_dir / 'epoch_2.pth'),
    )
    first = load(tmp_path / 'straight' / 'epoch_1.pth')['crd_memory_banks'][BANK]
    state, other = straight['crd_memory_banks'][BANK], resumed['crd_memory_banks'][BANK]
    assert state['student'].dtype == getattr(torch, bank_dtype)
    assert not torch.equal(state['student'], first['student'])  # the second epoch changed the banks
    for key in ('student', 'teacher', 'normalizers', 'written'):
        assert torch.equal(state[key], other[key]), key
    for key, value in straight['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][key]), key
