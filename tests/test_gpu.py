"""CUDA paths: banks, sampler and updates on the GPU; AMP training; a deterministic run twice.

Every test here is marked ``gpu`` and skipped (with the reason shown) where torch
sees no CUDA device; ``tools/gpu_check.sh`` runs them on a GPU machine. The
training runs are tools/train.py subprocesses with the GPU made visible
explicitly (the ``cmd`` fixture hides it by default).
"""

import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_configs import crcd_distiller, crd_config, distill_config

from crd_mm.memory import ContrastMemoryBank
from crd_mm.models.losses import CRDLoss

pytestmark = pytest.mark.gpu

TESTS_DIR = osp.dirname(osp.abspath(__file__))
ONE_GPU = {'CUDA_VISIBLE_DEVICES': '0'}


def labelled_banks(num_samples=600, feat_dim=16, dtype=torch.float32, seed=3):
    """The same bank (same seed, unbalanced labels of 4 classes) on the CPU and on the GPU."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate((50, 150, 100, 300))])
    labels = labels[torch.randperm(num_samples, generator=torch.Generator().manual_seed(0))]
    return [
        ContrastMemoryBank(
            num_samples, feat_dim, 0.5, labels=labels, device=device, dtype=dtype, seed=seed
        )
        for device in ('cpu', 'cuda')
    ], labels


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_initial_rows_on_the_gpu_are_the_cpu_rows(dtype):
    (cpu, gpu), _ = labelled_banks(dtype=dtype)
    assert gpu.student.is_cuda and gpu.student.dtype == dtype
    assert torch.equal(gpu.student.cpu(), cpu.student) and torch.equal(
        gpu.teacher.cpu(), cpu.teacher
    )


def test_sampler_on_the_gpu_draws_valid_reproducible_indices():
    (_, bank), labels = labelled_banks()
    labels = labels.cuda()
    idx = torch.tensor([0, 1, 299, 450, 599], device='cuda')
    bank.reseed(7)
    neg = bank.negatives(
        idx, 20000, 'class_exact', shared=False
    )  # every one of <= 550 others drawn
    assert neg.is_cuda and neg.shape == (5, 20000)
    assert int(neg.min()) >= 0 and int(neg.max()) < bank.num_samples
    assert (labels[neg] != labels[idx][:, None]).all()
    for row, anchor in zip(neg, idx):  # every sample of the other classes is reachable
        others = (labels != labels[anchor]).nonzero().flatten()
        assert torch.equal(torch.unique(row), others)
    uniform = bank.negatives(idx, 4000, 'uniform', shared=False)
    assert (uniform != idx[:, None]).all() and int(uniform.max()) < bank.num_samples
    assert bank.negatives(idx, 64, 'uniform', shared=True).shape == (64,)
    positives = bank.positives(idx, 'relax')
    assert (labels[positives] == labels[idx]).all()
    bank.reseed(7)
    assert torch.equal(bank.negatives(idx, 20000, 'class_exact', shared=False), neg)


def test_staged_updates_on_the_gpu_equal_the_cpu_updates():
    (cpu, gpu), _ = labelled_banks()
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        idx = torch.randint(0, cpu.num_samples, (32,), generator=gen)
        idx[5] = idx[0]  # a repeat: updated once, from its first occurrence
        student = F.normalize(torch.randn(32, 16, generator=gen), dim=1)
        teacher = F.normalize(torch.randn(32, 16, generator=gen), dim=1)
        cpu.stage(idx, student, teacher)
        gpu.stage(idx.cuda(), student.cuda(), teacher.cuda())
        health_cpu, health_gpu = cpu.apply_staged(), gpu.apply_staged()
        assert health_gpu['coverage'] == health_cpu['coverage']
        torch.testing.assert_close(gpu.student.cpu(), cpu.student)
        torch.testing.assert_close(gpu.teacher.cpu(), cpu.teacher)
        assert torch.equal(gpu.written.cpu(), cpu.written)


@pytest.mark.parametrize(
    'num, shared',
    [(60, False), (2000, False), (2000, True)],
    ids=['dense-scores', 'gathered-rows', 'shared'],
)
def test_crd_loss_and_gradients_on_the_gpu_equal_the_cpu(num, shared):
    losses = []
    for device in ('cpu', 'cuda'):
        loss = CRDLoss(
            num_negatives=31, feat_dim=16, negative_sampling='uniform', share_negatives=shared
        )
        loss.attach_memory_bank(ContrastMemoryBank(num, 16, 0.5, device=device, seed=2))
        gen = torch.Generator().manual_seed(0)
        idx = torch.randperm(num, generator=gen)[:8]
        neg = torch.randint(0, num, (31,) if shared else (8, 31), generator=gen)
        s = F.normalize(torch.randn(8, 16, generator=gen), dim=1).to(device).requires_grad_()
        t = F.normalize(torch.randn(8, 16, generator=gen), dim=1).to(device).requires_grad_()
        value = loss.contrast_loss(s, t, idx.to(device), neg.to(device))
        value.backward()
        losses.append(
            (value.detach().cpu(), s.grad.cpu(), t.grad.cpu(), loss.memory_bank.normalizers.cpu())
        )
    for cpu_value, gpu_value in zip(*losses):
        torch.testing.assert_close(gpu_value, cpu_value, rtol=1e-5, atol=1e-5)


def train_on_gpu(cmd, cfg, path, *args, env=None):
    cfg.dump(path)
    return cmd.python(
        ['tools/train.py', str(path), *args, '--cfg-options', 'log_level=INFO'],
        env={**ONE_GPU, **(env or {})},
        timeout=300,
    )


@pytest.mark.parametrize('method', ['crd', 'crcd'])
def test_training_under_amp_on_the_gpu(make_imagefolder, tmp_path, cmd, method):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    if method == 'crd':
        cfg, losses = crd_config(data, tmp_path / 'work'), ['loss_crd']
    else:
        cfg, losses = (
            distill_config(data, tmp_path / 'work', crcd_distiller()),
            ['loss_crcd', 'loss_crcd_grad'],
        )
    out = train_on_gpu(cmd, cfg, tmp_path / f'{method}_amp.py', '--amp')
    assert 'CUDA available: True' in out
    checkpoint = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu')
    assert 'loss_scaler' in checkpoint['optimizer']  # AmpOptimWrapper's state
    for name in losses:
        bank = checkpoint['crd_memory_banks'][f'distiller.distill_losses.{name}']
        assert bank['written'].all() and torch.isfinite(bank['student']).all()
        assert torch.isfinite(bank['normalizers']).all()
        history = checkpoint['message_hub']['log_scalars'][f'train/distill.{name}'].data[0]
        assert len(history) == 3 and np.isfinite(history).all()


def test_a_deterministic_gpu_run_repeats_exactly(make_imagefolder, tmp_path, cmd):
    """randomness.deterministic=True: mmengine calls torch.use_deterministic_algorithms(True)."""
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    records = []
    for run in ('first', 'second'):
        cfg = crd_config(
            data,
            tmp_path / run,
            max_epochs=2,
            hooks=[
                dict(type='CRDMemoryBankHook'),
                dict(type='BankProbeHook', out_dir=str(tmp_path / run)),
            ],
            extra_imports=('bank_probe',),
        )
        cfg.randomness = dict(seed=0, deterministic=True)
        out = train_on_gpu(
            cmd,
            cfg,
            tmp_path / f'{run}.py',
            env={
                'CUBLAS_WORKSPACE_CONFIG': ':4096:8',
                'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR]),
            },
        )
        assert 'CUDA available: True' in out and re.search(r'deterministic: True', out)
        records.append(
            torch.load(tmp_path / run / 'probe_rank0.pth', map_location='cpu', weights_only=False)
        )
    first, second = records
    assert len(first) == len(second) == 6
    for a, b in zip(first, second):
        assert a['indices'] == b['indices'] and a['losses'] == b['losses']
        for name, (student, teacher) in a['after'].items():
            assert torch.equal(student, b['after'][name][0]) and torch.equal(
                teacher, b['after'][name][1]
            )
            assert torch.equal(a['normalizers'][name], b['normalizers'][name])
