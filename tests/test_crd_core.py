"""CRD core: parity with mmrazor's CRD, sampling, synchronised bank updates, bad input."""

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement

import crd_mm  # noqa: F401  (applies compat patches, registers modules)
from crd_mm.memory import ContrastMemoryBank, CRDMemoryBankHook
from crd_mm.models.connectors import CRDConnector
from crd_mm.models.losses import CRCDLoss, CRDLoss

from mmrazor.models.losses.crd_loss import CRDLoss as MMRazorCRDLoss  # isort: skip


def samples(indices, **fields):
    return [
        BaseDataElement(sample_idx=torch.tensor(int(i)), **{k: v[j] for k, v in fields.items()})
        for j, i in enumerate(indices)
    ]


def embeddings(batch, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=gen), dim=1)


@pytest.mark.parametrize('num', [60, 2000], ids=['dense-scores', 'gathered-rows'])
def test_parity_with_mmrazor_loss_gradients_and_banks(num):
    """Identical banks, contrast indices and constants: same loss x weight, gradients and banks.

    N=60 (8 N <= (K + 1) D) scores every bank row at once; N=2000 gathers the contrast rows.
    """
    dim, k, batch, weight = 16, 31, 8, 0.8
    reference = MMRazorCRDLoss(temperature=0.07, neg_num=k, sample_n=num, dim_out=dim, momentum=0.5)
    ours = CRDLoss(
        loss_weight=weight,
        temperature=0.07,
        num_negatives=k,
        momentum=0.5,
        feat_dim=dim,
        negative_sampling='uniform',
    )
    bank = ContrastMemoryBank(num, dim, momentum=0.5, seed=3)
    reference.contrast.memory_v1.copy_(bank.student)
    reference.contrast.memory_v2.copy_(bank.teacher)
    ours.attach_memory_bank(bank)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):  # step 0 sets the constants, later steps reuse them
        idx = torch.randperm(num, generator=gen)[:batch]
        neg = torch.randint(0, num, (batch, k), generator=gen)
        e_s = embeddings(batch, dim, 10 + step).requires_grad_()
        e_t = embeddings(batch, dim, 20 + step).requires_grad_()
        r_s, r_t = e_s.detach().clone().requires_grad_(), e_t.detach().clone().requires_grad_()

        ref_loss = reference(
            r_s, r_t, samples(idx, contrast_sample_idxs=torch.cat([idx[:, None], neg], 1))
        )
        ref_loss.backward()
        loss = ours.contrast_loss(e_s, e_t, idx, neg)
        loss.backward()
        bank.stage(idx, e_s, e_t)
        bank.apply_staged()

        torch.testing.assert_close(loss, weight * ref_loss.squeeze(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(e_s.grad, weight * r_s.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(e_t.grad, weight * r_t.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bank.student, reference.contrast.memory_v1, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bank.teacher, reference.contrast.memory_v2, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            bank.normalizers, reference.contrast.params[2:4], atol=1e-5, rtol=1e-5
        )


def test_forward_samples_through_the_bank_and_stages_the_batch():
    loss = CRDLoss(num_negatives=5, feat_dim=8, negative_sampling='uniform')
    bank = ContrastMemoryBank(40, 8, momentum=0.5)
    loss.attach_memory_bank(bank)
    bank.reseed(0)
    value = loss(embeddings(4, 8, 0), embeddings(4, 8, 1), samples([1, 2, 3, 4]))
    assert torch.isfinite(value) and value > 0
    before = bank.student.clone()
    health = bank.apply_staged()
    changed = (bank.student != before).any(1).nonzero().flatten().tolist()
    assert changed == [1, 2, 3, 4]
    assert health['coverage'] == pytest.approx(4 / 40)


def labelled_bank(seed=0):
    labels = torch.arange(60) % 3  # 3 classes, 20 samples each
    return ContrastMemoryBank(60, 4, momentum=0.5, labels=labels, seed=seed), labels


def test_class_exact_negatives_come_from_other_classes_only():
    bank, labels = labelled_bank()
    bank.reseed(0)
    idx = torch.tensor([0, 1, 2, 30, 59])
    neg = bank.negatives(idx, 500, 'class_exact', shared=False)
    assert neg.shape == (5, 500)
    assert (labels[neg] != labels[idx][:, None]).all()
    # every sample of the other classes is reachable
    assert set(neg[0].tolist()) == set((labels != labels[0]).nonzero().flatten().tolist())


def test_uniform_negatives_exclude_the_sample_and_cover_the_rest():
    bank, _ = labelled_bank()
    bank.reseed(0)
    idx = torch.tensor([0, 59])
    neg = bank.negatives(idx, 2000, 'uniform', shared=False)
    assert (neg != idx[:, None]).all()
    assert set(neg[0].tolist()) == set(range(1, 60))
    assert bank.negatives(idx, 7, 'uniform', shared=True).shape == (7,)


def test_relaxed_positives_share_the_class_and_exact_ones_are_the_sample():
    bank, labels = labelled_bank()
    bank.reseed(0)
    idx = torch.arange(60)
    pos = bank.positives(idx, 'relax')
    assert (labels[pos] == labels).all() and (pos != idx).any()
    assert torch.equal(bank.positives(idx, 'exact'), idx)


def test_sampler_is_a_function_of_seed_and_iteration():
    bank, _ = labelled_bank()
    idx = torch.tensor([3, 4])
    draws = []
    for iteration in (5, 6, 5):
        bank.reseed(iteration)
        draws.append(bank.negatives(idx, 50, 'class_exact', shared=False))
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])


def test_shared_negatives_give_the_per_sample_result_when_rows_coincide():
    """Shared mode is the per-sample computation with one negative set broadcast to the batch."""
    loss = CRDLoss(num_negatives=6, feat_dim=8, negative_sampling='uniform', share_negatives=True)
    bank = ContrastMemoryBank(50, 8, momentum=0.5)
    loss.attach_memory_bank(bank)
    idx, neg = torch.tensor([1, 2, 3]), torch.tensor([10, 11, 12, 13, 14, 15])
    e_s, e_t = embeddings(3, 8, 0), embeddings(3, 8, 1)
    shared = loss.contrast_loss(e_s, e_t, idx, neg)
    per_sample = loss.contrast_loss(e_s, e_t, idx, neg.expand(3, -1))
    torch.testing.assert_close(shared, per_sample)


def test_duplicate_indices_update_once_from_the_first_occurrence():
    bank = ContrastMemoryBank(10, 4, momentum=0.5)
    first, second = embeddings(2, 4, 0)
    expected = F.normalize(0.5 * bank.student[3] + 0.5 * first, dim=0)
    bank.stage(torch.tensor([3, 3]), torch.stack([first, second]), torch.stack([first, second]))
    bank.apply_staged()
    torch.testing.assert_close(bank.student[3], expected)


def test_an_update_that_cancels_the_row_keeps_the_bank_finite():
    bank = ContrastMemoryBank(10, 4, momentum=0.5)
    opposite = -bank.student[1:2].clone()
    bank.stage(torch.tensor([1]), opposite, embeddings(1, 4, 0))
    bank.apply_staged()
    assert torch.isfinite(bank.student).all()


def test_non_finite_embeddings_are_skipped_and_the_bank_stays_finite():
    bank = ContrastMemoryBank(10, 4, momentum=0.5)
    before = bank.student.clone()
    bad = embeddings(2, 4, 0)
    bad[0, 0] = float('nan')
    bank.stage(torch.tensor([1, 2]), bad, embeddings(2, 4, 1))
    bank.apply_staged()
    assert torch.isfinite(bank.student).all() and torch.isfinite(bank.teacher).all()
    assert torch.equal(bank.student[1], before[1]) and not torch.equal(bank.student[2], before[2])


def test_bad_input_raises_and_writes_nothing():
    loss = CRDLoss(num_negatives=4, feat_dim=8, negative_sampling='uniform')
    with pytest.raises(
        RuntimeError, match="custom_hooks = \\[dict\\(type='CRDMemoryBankHook'\\)\\]"
    ):
        loss(embeddings(2, 8, 0), embeddings(2, 8, 1), samples([0, 1]))
    bank = ContrastMemoryBank(10, 8, momentum=0.5)
    loss.attach_memory_bank(bank)
    with pytest.raises(KeyError, match='sample_idx'):
        loss(embeddings(2, 8, 0), embeddings(2, 8, 1), [BaseDataElement(), BaseDataElement()])
    with pytest.raises(IndexError, match='outside the memory bank of 10 samples'):
        loss(embeddings(2, 8, 0), embeddings(2, 8, 1), samples([3, 10]))
    with pytest.raises(ValueError, match='feat_dim'):
        loss(embeddings(2, 4, 0), embeddings(2, 4, 1), samples([3, 4]))
    assert bank._staged == [] and bank.normalizers is None
    with pytest.raises(ValueError, match="negative_sampling='uniform'"):
        CRDLoss(share_negatives=True)


def test_connector_pools_maps_and_checks_its_width():
    connector = CRDConnector(dim_in=6, dim_out=4)
    out = connector((torch.randn(3, 6, 5, 5),))
    assert out.shape == (3, 4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(connector(torch.randn(3, 6, 1, 1)).norm(dim=1), torch.ones(3))
    with pytest.raises(
        ValueError, match='set dim_in to the channel count of the recorded layer \\(7\\)'
    ):
        connector(torch.randn(3, 7))


def test_registry_names_resolve_to_crd_mm():
    from mmengine.registry import HOOKS
    from mmrazor.registry import MODELS

    assert MODELS.get('CRDLoss') is CRDLoss
    assert MODELS.get('CRDConnector') is CRDConnector
    assert HOOKS.get('CRDMemoryBankHook') is crd_mm.memory.CRDMemoryBankHook


def test_bank_state_round_trip_and_length_check():
    bank = ContrastMemoryBank(10, 4, momentum=0.5, seed=1)
    bank.stage(torch.tensor([2]), embeddings(1, 4, 0), embeddings(1, 4, 1))
    bank.apply_staged()
    restored = ContrastMemoryBank(10, 4, momentum=0.5, seed=7)
    restored.load_state_dict(bank.state_dict())
    assert torch.equal(restored.student, bank.student) and torch.equal(
        restored.written, bank.written
    )
    with pytest.raises(ValueError, match='load_from='):
        ContrastMemoryBank(11, 4, momentum=0.5).load_state_dict(bank.state_dict())


def test_half_precision_storage_scores_in_float32():
    loss = CRDLoss(num_negatives=4, feat_dim=8, negative_sampling='uniform')
    bank = ContrastMemoryBank(20, 8, momentum=0.5, dtype=torch.float16)
    loss.attach_memory_bank(bank)
    bank.reseed(0)
    value = loss(embeddings(2, 8, 0), embeddings(2, 8, 1), samples([0, 1]))
    assert value.dtype == torch.float32 and torch.isfinite(value)
    bank.apply_staged()
    assert bank.student.dtype == torch.float16
    torch.testing.assert_close(bank.student[0].float().norm(), torch.tensor(1.0), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    'num, shared',
    [(2000, False), (4, False), (2000, True)],
    ids=['gathered-rows', 'dense-scores', 'shared'],
)
def test_gradcheck_in_float64(num, shared):
    """Every scoring path, including the chunked gather's own backward, in float64."""
    loss = CRDLoss(num_negatives=5, feat_dim=6, negative_sampling='uniform', share_negatives=shared)
    loss.attach_memory_bank(ContrastMemoryBank(num, 6, momentum=0.5, dtype=torch.float64, seed=4))
    gen = torch.Generator().manual_seed(1)
    idx = torch.tensor([0, 1, 2])
    neg = torch.randint(0, num, (5,) if shared else (3, 5), generator=gen)
    s = F.normalize(torch.randn(3, 6, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    t = F.normalize(torch.randn(3, 6, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    loss.contrast_loss(s, t, idx, neg)  # sets the normalisation constants
    assert torch.autograd.gradcheck(lambda a, b: loss.contrast_loss(a, b, idx, neg), (s, t))


def test_labels_that_disagree_with_the_training_set_are_refused():
    loss = CRDLoss(num_negatives=4, feat_dim=4)
    bank, labels = labelled_bank()
    loss.attach_memory_bank(bank)
    bank.reseed(0)
    good = samples([3, 4], gt_label=torch.stack([labels[3:4], labels[4:5]]))
    assert torch.isfinite(loss(embeddings(2, 4, 0), embeddings(2, 4, 1), good))
    wrong = samples([3, 4], gt_label=torch.stack([labels[3:4], (labels[4:5] + 1) % 3]))
    with pytest.raises(ValueError, match='sample 4 has label'):
        loss(embeddings(2, 4, 0), embeddings(2, 4, 1), wrong)
    assert len(bank._staged) == 1


@pytest.mark.parametrize(
    'build, error, message',
    [
        (lambda: ContrastMemoryBank(1, 4, 0.5), ValueError, 'at least 2 samples'),
        (
            lambda: ContrastMemoryBank(6, 4, 0.5, labels=torch.zeros(5)),
            ValueError,
            'one label per sample',
        ),
        (
            lambda: ContrastMemoryBank(6, 4, 0.5, labels=torch.tensor([0, 1, -1, 0, 1, 0])),
            ValueError,
            'non-negative class label',
        ),
        (
            lambda: ContrastMemoryBank(6, 4, 0.5, labels=torch.zeros(6)),
            ValueError,
            "use negative_sampling='uniform'",
        ),
        (lambda: CRDLoss(negative_sampling='hard'), ValueError, 'negative_sampling must be one of'),
        (lambda: CRDLoss(positive='near'), ValueError, 'positive must be one of'),
        (lambda: CRDLoss(num_negatives=0), ValueError, 'CRDLoss needs num_negatives >= 1'),
        (lambda: CRCDLoss(relation='logit'), ValueError, 'relation must be one of'),
        (
            lambda: CRCDLoss(temperature=0),
            ValueError,
            'CRCDLoss needs num_negatives >= 1, temperature > 0',
        ),
        (lambda: CRDMemoryBankHook(bank_dtype='int8'), ValueError, "bank_dtype must be 'float32'"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_class_aware_sampling_without_labels_names_the_uniform_mode():
    bank = ContrastMemoryBank(10, 4, 0.5)
    bank.reseed(0)
    with pytest.raises(ValueError, match="needs class labels.*negative_sampling='uniform'"):
        bank.negatives(torch.tensor([1]), 3, 'class_exact', shared=False)
    with pytest.raises(ValueError, match="positive='relax' needs class labels"):
        bank.positives(torch.tensor([1]), 'relax')


def test_crd_needs_the_batch_data_samples():
    loss = CRDLoss(num_negatives=4, feat_dim=8, negative_sampling='uniform')
    loss.attach_memory_bank(ContrastMemoryBank(10, 8, momentum=0.5))
    with pytest.raises(
        ValueError, match="data_samples=dict\\(from_student=True, recorder='data_samples'"
    ):
        loss(embeddings(2, 8, 0), embeddings(2, 8, 1), [])


def test_overflowing_first_batch_scores_do_not_set_the_constants():
    bank = ContrastMemoryBank(10, 4, momentum=0.5)
    scores = torch.full((2, 3), 1000.0)
    with pytest.raises(
        FloatingPointError, match='normalisation constants from the first batch are not finite'
    ):
        bank.log_normalizers(scores, scores)
    assert bank.normalizers is None


def test_resuming_a_checkpoint_without_this_loss_bank_is_refused():
    hook = CRDMemoryBankHook()
    hook.banks = {'distiller.distill_losses.loss_crd': ContrastMemoryBank(10, 4, momentum=0.5)}
    other = {
        'distiller.distill_losses.loss_other': ContrastMemoryBank(10, 4, momentum=0.5).state_dict()
    }
    with pytest.raises(
        KeyError, match="no memory bank for \\['distiller.distill_losses.loss_crd'\\]"
    ):
        hook.after_load_checkpoint(SimpleNamespace(_resume=True), {'crd_memory_banks': other})
