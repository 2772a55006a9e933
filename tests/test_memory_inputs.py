"""What reaches the memories is right: shared negatives, dataset wrappers, inherited options."""

import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from tiny_configs import crd_distiller, distill_config, image_folder_loader

from crd_mm.memory import ContrastMemoryBank, ShardedMemoryBank
from crd_mm.models.losses import CRDLoss

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BANK = 'distiller.distill_losses.loss_crd'


def unit_rows(batch, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=1)


def samples(indices):
    return [BaseDataElement(sample_idx=torch.tensor(int(i))) for i in indices]


# ------------------------------------------------------------------ shared negatives


def test_shared_negatives_never_include_the_anchors_own_row():
    """N=1000, K=500: about 39% of anchors draw their own row among the negatives; none keeps it."""
    num, k, batch = 1000, 500, 64
    bank = ContrastMemoryBank(num, 8, 0.5, seed=0)
    gen = torch.Generator().manual_seed(0)
    drawn = kept = 0
    for iteration in range(20):
        bank.reseed(iteration)
        idx = torch.randperm(num, generator=gen)[:batch]
        contrast = bank.contrast(
            idx, None, None, 'exact', k, negative_sampling='uniform', shared=True
        )
        own = contrast.negative[None, :] == idx[:, None]
        valid = (
            torch.ones(batch, k + 1, dtype=torch.bool) if contrast.valid is None else contrast.valid
        )
        assert valid[:, 0].all() and torch.equal(valid[:, 1:], ~own)  # only the own row is left out
        drawn += int(own.any(1).sum())
        kept += int((own & valid[:, 1:]).any(1).sum())
    assert drawn / (20 * batch) == pytest.approx(1 - (1 - 1 / num) ** k, abs=0.06)
    assert kept == 0


def nce_reference(anchor, rows, idx, negative, valid, num_samples, z, temperature, eps):
    """CRD's NCE (paper Eq. 18) per sample, float64: P = exp(s) / Z, Pn = 1 / N, K_i valid."""
    total = 0.0
    for i in range(anchor.shape[0]):
        kept = [int(negative[j]) for j in range(negative.numel()) if valid[i, j]]
        k_pn = len(kept) / num_samples
        p0 = math.exp(float(anchor[i] @ rows[idx[i]]) / temperature) / z
        total -= math.log(p0 / (p0 + k_pn + eps))
        for row in kept:
            p = math.exp(float(anchor[i] @ rows[row]) / temperature) / z
            total -= math.log(k_pn / (p + k_pn + eps))
    return total / anchor.shape[0]


def first_batch_z(anchor, rows, idx, negative, valid, num_samples, temperature):
    """Z = N x mean of exp(score) over the first batch's positives and valid negatives."""
    values = []
    for i in range(anchor.shape[0]):
        chosen = [int(idx[i])] + [int(negative[j]) for j in range(negative.numel()) if valid[i, j]]
        values += [math.exp(float(anchor[i] @ rows[r]) / temperature) for r in chosen]
    return num_samples * sum(values) / len(values)


@pytest.mark.parametrize('bank_type', [ContrastMemoryBank, ShardedMemoryBank])
def test_shared_negative_loss_is_nce_without_the_anchors_own_row(bank_type):
    """N=6, K=12 shared negatives: each anchor's own row is drawn; the loss is NCE over the rest."""
    num, k, dim, temperature, eps = 6, 12, 8, 0.07, 1e-7
    bank = bank_type(num, dim, 0.5, dtype=torch.float64, seed=1)
    loss = CRDLoss(
        loss_weight=0.5,
        temperature=temperature,
        num_negatives=k,
        feat_dim=dim,
        negative_sampling='uniform',
        share_negatives=True,
        eps=eps,
    )
    loss.attach_memory_bank(bank)
    idx = torch.tensor([0, 2, 5])
    bank.reseed(7)
    negative = bank.negatives(idx, k, 'uniform', shared=True)
    valid = negative[None, :] != idx[:, None]
    assert (~valid).any(1).all()  # each anchor drew its own row at least once
    s = unit_rows(3, dim, 0).requires_grad_()
    t = unit_rows(3, dim, 1).requires_grad_()
    bank.reseed(7)  # the loss draws the same negatives
    value = loss(s, t, samples(idx))

    teacher, student = bank.teacher.double(), bank.student.double()
    z_s = first_batch_z(s.detach(), teacher, idx, negative, valid, num, temperature)
    z_t = first_batch_z(t.detach(), student, idx, negative, valid, num, temperature)
    torch.testing.assert_close(  # Z is kept in float32
        bank.normalizers.double(), torch.tensor([z_s, z_t], dtype=torch.float64), rtol=1e-6, atol=0
    )
    z_s, z_t = bank.normalizers.tolist()
    expected = 0.5 * (
        nce_reference(s.detach(), teacher, idx, negative, valid, num, z_s, temperature, eps)
        + nce_reference(t.detach(), student, idx, negative, valid, num, z_t, temperature, eps)
    )
    assert float(value) == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# ------------------------------------------------------------------ dataset wrappers


def folder_dataset(root):
    return image_folder_loader(root)['dataset']


def train_and_get_banks(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
    return hook.banks, runner


def folder_labels(root):
    """The labels mmpretrain's CustomDataset gives ``root`` (classes: sorted folder names)."""
    paths = sorted(glob.glob(osp.join(root, 'class_*', '*.png')))
    return [int(osp.basename(osp.dirname(p)).split('_')[1]) for p in paths]


def concat_config(first, second, work_dir, datasets=None):
    """ConcatDataset([first, second]) with one uniform and one class-exact CRD loss."""
    distiller = crd_distiller(dict(negative_sampling='uniform'))
    losses, mappings = distiller['distill_losses'], distiller['loss_forward_mappings']
    losses['loss_crd_cls'] = dict(losses['loss_crd'], negative_sampling='class_exact')
    mappings['loss_crd_cls'] = mappings['loss_crd']
    cfg = distill_config(first, work_dir, distiller)
    cfg.train_dataloader.dataset = dict(
        type='ConcatDataset',
        datasets=datasets or [folder_dataset(first), folder_dataset(second)],
    )
    return cfg


def two_folders(make_imagefolder, tmp_path):
    first = make_imagefolder(tmp_path / 'first', num_classes=2, per_class=4, seed=0)
    second = make_imagefolder(tmp_path / 'second', num_classes=2, per_class=3, seed=1)
    return first, second


def test_concatenated_datasets_get_one_row_per_sample(make_imagefolder, tmp_path):
    """ConcatDataset of 8 + 6 images: 14 rows, all written in one epoch, labels in row order.

    One run, two CRD losses: uniform and class-exact negatives (each step of the
    latter also checks the samples' labels against the bank's).
    """
    first, second = two_folders(make_imagefolder, tmp_path)
    banks, _ = train_and_get_banks(concat_config(first, second, tmp_path / 'work'))
    for bank in banks.values():
        assert bank.num_samples == 14
        assert bool(bank.written.all())  # coverage 1.0
    assert banks[BANK + '_cls'].labels.tolist() == folder_labels(first) + folder_labels(second)


@pytest.mark.slow
def test_repeated_and_class_balanced_samples_keep_their_one_row(make_imagefolder, tmp_path):
    """Concat(Repeat(8 images, 2), ClassBalanced(6 images)): 14 rows, not 16 + 12."""
    first, second = two_folders(make_imagefolder, tmp_path)
    wrapped = [
        dict(type='RepeatDataset', times=2, dataset=folder_dataset(first)),
        dict(type='ClassBalancedDataset', oversample_thr=1.0, dataset=folder_dataset(second)),
    ]
    banks, runner = train_and_get_banks(concat_config(first, second, tmp_path / 'work', wrapped))
    assert len(runner.train_dataloader.dataset) == 16 + 12  # every sample shown twice
    for bank in banks.values():
        assert bank.num_samples == 14 and bool(bank.written.all())
    assert banks[BANK + '_cls'].labels.tolist() == folder_labels(first) + folder_labels(second)


# ------------------------------------------------------------------ inherited options


def test_a_queue_inherits_the_bank_recipe_with_two_keys(make_imagefolder, tmp_path):
    """The base sets num_negatives; memory='queue' and queue_size alone must build and train."""
    child = tmp_path / 'queue_child.py'
    base = osp.join(REPO_ROOT, 'configs', '_base_', 'distillers', 'crd.py')
    child.write_text(
        f'_base_ = [{base!r}]\n'
        "crd_distiller = dict(distill_losses=dict(loss_crd=dict(memory='queue', queue_size=8)))\n"
    )
    distiller = Config.fromfile(str(child)).crd_distiller.to_dict()
    assert distiller['distill_losses']['loss_crd']['num_negatives'] == 16384  # inherited
    # the tiny networks' pooled widths (tiny_configs.crd_distiller)
    distiller['connectors'] = crd_distiller({})['connectors']
    for connector in distiller['connectors'].values():
        connector['dim_out'] = 128
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    cfg = distill_config(data, tmp_path / 'work', distiller)
    cfg.log_level = 'INFO'
    banks, runner = train_and_get_banks(cfg)
    queue = banks[BANK]
    assert type(queue).__name__ == 'ContrastQueue' and queue.queue_size == 8
    assert (queue.sample_idx >= 0).all()  # 8 samples went through the queue
    log = ''.join(open(f).read() for f in glob.glob(osp.join(runner.log_dir, '*.log')))
    assert "num_negatives=16384 does not apply to memory='queue'" in log


@pytest.mark.slow
def test_iteration_based_training_with_workers_sees_the_shifted_indices(make_imagefolder, tmp_path):
    """IterBasedTrainLoop starts its worker before any hook runs: it must still see the shift."""
    first, second = two_folders(make_imagefolder, tmp_path)
    cfg = concat_config(first, second, tmp_path / 'work')
    cfg.train_dataloader.update(num_workers=1, persistent_workers=True)
    cfg.train_cfg = dict(by_epoch=False, max_iters=4)  # 14 samples in batches of 4: one pass
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=4, by_epoch=False)
    cfg.log_processor = dict(by_epoch=False)
    banks, _ = train_and_get_banks(cfg)
    for bank in banks.values():
        assert bank.num_samples == 14 and bool(bank.written.all())
