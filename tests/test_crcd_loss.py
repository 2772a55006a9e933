"""CRCD: relation scores, gradients, the gradient element, training and cross-rank banks."""

import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from tiny_configs import crcd_distiller, distill_config

from crd_mm.memory import ContrastMemoryBank
from crd_mm.models.losses import CRCDLoss
from crd_mm.models.losses.crcd_loss import feature_gradients, relation_scores

TESTS_DIR = osp.dirname(osp.abspath(__file__))


def test_relation_scores_equal_the_materialised_relations():
    """The dot-product expansion gives exactly normalize(w - a) . normalize(v - a)."""
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(30, 6, dtype=torch.float64, generator=gen)
    idx = torch.tensor([3, 7, 11, 20, 29])
    contrast = torch.cat([idx[:, None], torch.randint(0, 30, (5, 6), generator=gen)], 1)
    v = torch.randn(5, 6, dtype=torch.float64, generator=gen)
    anchors = bank[idx]
    expected = torch.stack(
        [
            F.normalize(bank[contrast[i]] - anchors[a], dim=1)
            @ F.normalize(v[i] - anchors[a], dim=0)
            / 0.05
            for i in range(5)
            for a in range(5)
            if a != i
        ]
    )
    torch.testing.assert_close(relation_scores(v, bank, idx, contrast, 0.05), expected)


def test_coinciding_rows_and_an_embedding_at_its_anchor_give_zero_relations_in_float32():
    """Rows that coincide at different indices (the teacher's gradient embeddings of samples it
    classifies perfectly all equal its head's normalised bias) and an embedding equal to its
    anchor have zero relation vectors: cosine 0 as F.normalize gives, finite gradients. The
    float32 expansion left rounding noise divided by ~1e-12 there (scores ~1e6, then NaN in a
    demo run)."""
    gen = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(6, 8, generator=gen), dim=1)
    bank[1] = bank[0]
    v = bank[:3].clone().requires_grad_()  # every embedding equals its own row
    idx = torch.tensor([0, 1, 2])
    contrast = torch.tensor([[0, 3, 1], [1, 4, 0], [2, 5, 0]])
    scores = relation_scores(v, bank, idx, contrast, 0.05)
    scores.sum().backward()
    assert torch.isfinite(v.grad).all()
    b64, v64 = bank.double(), v.detach().double()
    expected = torch.stack(
        [
            F.normalize(b64[contrast[i]] - b64[idx[a]], dim=1)
            @ F.normalize(v64[i] - b64[idx[a]], dim=0)
            / 0.05
            for i in range(3)
            for a in range(3)
            if a != i
        ]
    )
    torch.testing.assert_close(scores.double(), expected, atol=1e-4, rtol=1e-4)


def bank_loss(relation='feature', dtype=torch.float64):
    loss = CRCDLoss(
        num_negatives=4,
        feat_dim=6,
        negative_sampling='uniform',
        relation=relation,
        student_channels=5 if relation == 'gradient' else None,
        teacher_channels=7 if relation == 'gradient' else None,
    )
    loss.attach_memory_bank(ContrastMemoryBank(40, 6, momentum=0.5, dtype=dtype, seed=1))
    return loss


def test_gradcheck_in_float64():
    loss = bank_loss()
    idx, neg = (
        torch.tensor([1, 5, 9]),
        torch.randint(0, 40, (3, 4), generator=torch.Generator().manual_seed(2)),
    )
    s = F.normalize(torch.randn(3, 6, dtype=torch.float64), dim=1).requires_grad_()
    t = F.normalize(torch.randn(3, 6, dtype=torch.float64), dim=1).requires_grad_()
    loss.relation_loss(s, t, idx, neg)  # sets the normalisation constants
    assert torch.autograd.gradcheck(lambda a, b: loss.relation_loss(a, b, idx, neg), (s, t))


def test_gradient_element_matches_the_linear_head_closed_form():
    head = torch.nn.Linear(5, 3).double()
    feats = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    logits, labels = head(feats), torch.tensor([0, 2, 1, 2])
    by_autograd = feature_gradients(feats, logits, labels)
    closed_form = feature_gradients(feats, logits, labels, fc_weight=head.weight)
    torch.testing.assert_close(by_autograd, closed_form)
    assert by_autograd.requires_grad  # double backpropagation: the loss on it reaches the network
    with pytest.raises(ValueError, match='autograd graph'):
        feature_gradients(feats.detach(), logits.detach(), labels)


def test_gradient_relation_trains_the_student_through_double_backprop():
    loss = bank_loss('gradient', dtype=torch.float32)
    loss.memory_bank.reseed(0)
    student, teacher = torch.nn.Linear(5, 3), torch.nn.Linear(7, 3)
    s_feats = torch.randn(3, 5, requires_grad=True)
    t_feats = torch.randn(3, 7)
    samples = [
        BaseDataElement(sample_idx=torch.tensor(i), gt_label=torch.tensor([i % 3]))
        for i in (0, 1, 2)
    ]
    value = loss(s_feats, t_feats, samples, student(s_feats), teacher(t_feats), teacher.weight)
    value.backward()
    assert torch.isfinite(value)
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert loss.teacher_head.weight.grad.abs().sum() > 0 and teacher.weight.grad is None
    with pytest.raises(ValueError, match='t_fc_weight'):
        loss(s_feats, t_feats, samples)


def test_small_batches_and_missing_arguments():
    """A later batch of one sample (an epoch's last) adds zero loss and still updates the bank."""
    loss = bank_loss(dtype=torch.float32)
    one = [BaseDataElement(sample_idx=torch.tensor(3))]
    with pytest.raises(ValueError, match='first batch needs at least 2 samples'):
        loss(torch.randn(1, 6), torch.randn(1, 6), one)
    with pytest.raises(ValueError, match="relation='gradient' embeds"):
        CRCDLoss(relation='gradient')
    assert loss.memory_bank._staged == []
    two = [BaseDataElement(sample_idx=torch.tensor(i)) for i in (3, 4)]
    loss.memory_bank.reseed(0)
    loss(F.normalize(torch.randn(2, 6), dim=1), F.normalize(torch.randn(2, 6), dim=1), two)
    assert (
        loss(F.normalize(torch.randn(1, 6), dim=1), F.normalize(torch.randn(1, 6), dim=1), one) == 0
    )
    assert [s[0].tolist() for s in loss.memory_bank._staged] == [[3, 4], [3]]


def test_crcd_trains_in_a_runner_with_both_relations(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    runner = Runner.from_cfg(
        distill_config(data, tmp_path / 'work', crcd_distiller(), max_epochs=1)
    )
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
    assert sorted(hook.banks) == [
        'distiller.distill_losses.loss_crcd',
        'distiller.distill_losses.loss_crcd_grad',
    ]
    assert all(bank.written.all() for bank in hook.banks.values())
    for name in ('train/distill.loss_crcd', 'train/distill.loss_crcd_grad'):
        history = runner.message_hub.log_scalars[name].data[0]
        assert len(history) == 3 and (history > 0).all()


def test_crcd_banks_are_identical_on_both_ranks(make_imagefolder, tmp_path, cmd, free_port):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    cfg = distill_config(
        data,
        tmp_path / 'work',
        crcd_distiller(),
        max_epochs=1,
        batch_size=2,
        hooks=[dict(type='CRDMemoryBankHook'), dict(type='BankProbeHook', out_dir=str(tmp_path))],
        extra_imports=('bank_probe',),
    )
    cfg.dump(tmp_path / 'crcd_dist.py')
    cmd.python(
        [
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={free_port}',
            'tools/train.py',
            str(tmp_path / 'crcd_dist.py'),
            '--launcher',
            'pytorch',
        ],
        env={'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])},
        timeout=240,
    )
    ranks = [torch.load(tmp_path / f'probe_rank{r}.pth', weights_only=False) for r in (0, 1)]
    assert len(ranks[0]) == 3
    for rec0, rec1 in zip(*ranks):
        union = sorted(set(rec0['indices']) | set(rec1['indices']))
        for name, (student, teacher) in rec0['after'].items():
            assert torch.equal(student, rec1['after'][name][0]) and torch.equal(
                teacher, rec1['after'][name][1]
            )
            assert (student != rec0['before'][name][0]).any(1).nonzero().flatten().tolist() == union


@pytest.mark.slow
@pytest.mark.parametrize('batch, num_negatives', [(384, 500), (128, 4096), (64, 16384)])
def test_documented_crcd_sizes_fit_in_8_gb(cmd, batch, num_negatives):
    """One CRCD step (both branches, fwd + bwd) at sizes docs/benchmarks.md lists as fitting."""
    case = json.dumps(
        [
            f'CRCD K={num_negatives}',
            dict(type='CRCDLoss', num_negatives=num_negatives, negative_sampling='uniform'),
            batch,
        ]
    )
    out = cmd.python(
        ['tools/benchmark/loss_benchmark.py', '--case', case, '--steps', '1'], timeout=600
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert 0 < result['peak_bytes'] < 8e9


def test_crcd_refuses_labels_that_disagree_with_the_training_set():
    loss = CRCDLoss(num_negatives=4, feat_dim=6)
    loss.attach_memory_bank(ContrastMemoryBank(30, 6, momentum=0.5, labels=torch.arange(30) % 3))
    loss.memory_bank.reseed(0)
    wrong = [
        BaseDataElement(sample_idx=torch.tensor(i), gt_label=torch.tensor([(i + 1) % 3]))
        for i in (3, 4)
    ]
    with pytest.raises(ValueError, match='sample 3 has label 1 in its data sample but 0'):
        loss(F.normalize(torch.randn(2, 6), dim=1), F.normalize(torch.randn(2, 6), dim=1), wrong)
    assert loss.memory_bank._staged == []
