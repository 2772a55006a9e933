"""Our losses' authors-compatible options against the authors' formulas, rewritten here.

Each ``authors_*`` function below restates what the authors' code computes
(described in ../shared/REFERENCE.md, "What the authors' code does ..."),
written independently of crd_mm and materialising what our losses expand:
CRCD (Lechatelia/CRCD: crcd/memory.py, crcd/criterion.py, helper/loops.py),
DCD (giakoumoglou/distillers: DCD.py), CKD (ZhouXinzzzzz/CKD: CKD.py).
Inputs are fixed (seeded), small and float64; values and gradients are compared.
"""

import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from tiny_configs import crcd_distiller, distill_config

from crd_mm.memory import ContrastMemoryBank
from crd_mm.models.losses import CKDLoss, CRCDLoss, DCDLoss

B, K, D, N = 4, 5, 6, 20  # batch, negatives, embedding width, bank rows
AUTHORS_EPS = 1e-7  # crcd/criterion.py's eps


# ------------------------------------------------------------- the authors' CRCD
def authors_relation_scores(v, memory, y, contrast_idx, temperature):
    """exp(<normalize(w - a + 1e-6), normalize(v_i - a + 1e-6)> / T), B^2 pairs: (B^2, K + 1)."""
    batch, dim = v.shape
    anchors = memory[y]
    relation = F.normalize(
        (v[:, None, :] - anchors[None, :, :] + 1e-6).reshape(batch * batch, dim), dim=1
    )
    candidates = memory[contrast_idx]  # (B, K + 1, D)
    candidate_relation = candidates[:, None, :, :] - anchors[None, :, None, :] + 1e-6
    candidate_relation = F.normalize(candidate_relation.reshape(batch * batch, -1, dim), dim=2)
    return torch.exp(torch.bmm(candidate_relation, relation[:, :, None]).squeeze(2) / temperature)


def authors_contrast_loss(x, n_data):
    """CRD's NCE loss on P = exp(s) / Z: positive in column 0, divided by the number of rows."""
    m, pn = x.shape[1] - 1, 1.0 / n_data
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + m * pn + AUTHORS_EPS))
    log_d0 = torch.log(m * pn / (x[:, 1:] + m * pn + AUTHORS_EPS))
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


def authors_crcd(f_s, f_t, bank, y, negative, temperature, z=None):
    """Student embeddings against the teacher bank plus teacher embeddings against the student bank.

    Returns the loss and the authors' normalisation constants (mean of the
    first batch's exp-scores times N). ``z`` replaces them once our own are
    known to agree, so that the float64 comparison does not inherit our
    float32 constants' rounding.
    """
    contrast_idx = torch.cat([y[:, None], negative], 1)
    out_s = authors_relation_scores(f_s, bank.teacher, y, contrast_idx, temperature)
    out_t = authors_relation_scores(f_t, bank.student, y, contrast_idx, temperature)
    authors_z = torch.stack([out_s.detach().mean(), out_t.detach().mean()]) * bank.num_samples
    z = authors_z if z is None else z
    loss = authors_contrast_loss(out_s / z[0], bank.num_samples) + authors_contrast_loss(
        out_t / z[1], bank.num_samples
    )
    return loss, authors_z


def authors_distill_kl(logit_s, logit_t, temperature):
    """RepDistiller's DistillKL: sum-reduced KL(p_t || p_s) * T^2 / B."""
    p_s = F.log_softmax(logit_s / temperature, dim=1)
    p_t = F.softmax(logit_t / temperature, dim=1)
    return F.kl_div(p_s, p_t, reduction='sum') * temperature**2 / logit_s.shape[0]


def used_normalizers(bank):
    """Z exactly as our loss applies it (it subtracts log Z, taken in the constants' float32)."""
    return bank.normalizers.log().double().exp()


def l2_normalised_bank(seed=3):
    """A float64 bank whose rows start L2-normalised, as the authors' do."""
    bank = ContrastMemoryBank(N, D, momentum=0.5, dtype=torch.float64, seed=seed)
    bank.student, bank.teacher = F.normalize(bank.student, dim=1), F.normalize(bank.teacher, dim=1)
    return bank


def batch_with_colliding_negatives():
    """Batch indices and negatives; two negatives drawn at other batch samples' rows (w - a = 0)."""
    gen = torch.Generator().manual_seed(7)
    idx = torch.tensor([2, 9, 13, 17])
    negative = torch.randint(0, N, (B, K), generator=gen)
    negative[0, 1], negative[3, 4] = idx[2], idx[0]
    return idx, negative


def check_close_with_gradients(ours, theirs, inputs):
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, inputs, retain_graph=True),
        torch.autograd.grad(theirs, inputs, retain_graph=True),
    ):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-7, atol=1e-10)


def test_crcd_include_self_pairs_is_the_authors_relation_loss():
    """Feature relation: all B^2 pairs, normalize(x - a + 1e-6), Z from the first batch."""
    gen = torch.Generator().manual_seed(0)
    s = F.normalize(torch.randn(B, D, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    t = F.normalize(torch.randn(B, D, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    idx, negative = batch_with_colliding_negatives()
    loss = CRCDLoss(
        num_negatives=K, feat_dim=D, negative_sampling='uniform', include_self_pairs=True
    )
    loss.attach_memory_bank(l2_normalised_bank())

    ours = loss.relation_loss(s, t, idx, negative)  # the first batch: sets Z
    theirs, authors_z = authors_crcd(s, t, loss.memory_bank, idx, negative, 0.05)
    torch.testing.assert_close(loss.memory_bank.normalizers.double(), authors_z, rtol=1e-6, atol=0)
    theirs, _ = authors_crcd(
        s, t, loss.memory_bank, idx, negative, 0.05, z=used_normalizers(loss.memory_bank)
    )
    check_close_with_gradients(ours, theirs, (s, t))

    # our default leaves the a = i pairs out: a different loss on the same inputs
    default = CRCDLoss(num_negatives=K, feat_dim=D, negative_sampling='uniform')
    default.attach_memory_bank(loss.memory_bank)
    assert not torch.allclose(default.relation_loss(s, t, idx, negative), ours)


def test_crcd_authors_gradient_element_and_kd_product():
    """Gradient relation, every authors' option: alpha * KD * CRCD(embed(d mean-CE / d feat))."""
    gen = torch.Generator().manual_seed(1)
    s_feats = torch.randn(B, 5, dtype=torch.float64, generator=gen).requires_grad_()
    t_feats = torch.randn(B, 7, dtype=torch.float64, generator=gen)
    student_fc, teacher_fc = torch.nn.Linear(5, 3).double(), torch.nn.Linear(7, 3).double()
    labels = torch.tensor([0, 2, 1, 2])
    idx, _ = batch_with_colliding_negatives()
    samples = [
        BaseDataElement(sample_idx=i, gt_label=torch.tensor([c])) for i, c in zip(idx, labels)
    ]
    loss = CRCDLoss(
        relation='gradient',
        num_negatives=K,
        feat_dim=D,
        negative_sampling='uniform',
        student_channels=5,
        teacher_channels=7,
        include_self_pairs=True,
        gradient_reduction='mean',
        gradient_combine='multiply_kd',
        kd_weight=0.9,
        kd_temperature=4.0,
    ).double()
    loss.attach_memory_bank(l2_normalised_bank())
    bank = loss.memory_bank
    bank.reseed(0)  # the negatives the loss will draw, drawn here first
    negative = bank.negatives(idx, K, 'uniform', shared=False)
    bank.reseed(0)
    s_logits, t_logits = student_fc(s_feats), teacher_fc(t_feats)
    ours = loss(s_feats, t_feats, samples, s_logits, t_logits, teacher_fc.weight)

    # helper/loops.py get_grad_loss: autograd of the mean cross-entropy w.r.t. each network's
    # features
    t_leaf = t_feats.clone().requires_grad_()
    grad_s = torch.autograd.grad(F.cross_entropy(s_logits, labels), s_feats, create_graph=True)[0]
    grad_t = torch.autograd.grad(
        F.cross_entropy(teacher_fc(t_leaf), labels), t_leaf, create_graph=True
    )[0]
    # crcd/criterion.py Embed: linear, then L2 normalisation
    e_s, e_t = (
        F.normalize(loss.student_head(grad_s), dim=1),
        F.normalize(loss.teacher_head(grad_t), dim=1),
    )
    loss_gm, authors_z = authors_crcd(e_s, e_t, bank, idx, negative, 0.05)
    torch.testing.assert_close(bank.normalizers.double(), authors_z, rtol=1e-6, atol=0)
    loss_gm, _ = authors_crcd(e_s, e_t, bank, idx, negative, 0.05, z=used_normalizers(bank))
    theirs = 0.9 * authors_distill_kl(s_logits, t_logits.detach(), 4.0) * loss_gm
    check_close_with_gradients(
        ours,
        theirs,
        (s_feats, student_fc.weight, loss.student_head.weight, loss.teacher_head.weight),
    )


def test_crcd_gradient_options_refused_on_the_feature_relation():
    with pytest.raises(ValueError, match="relation='gradient' only"):
        CRCDLoss(gradient_combine='multiply_kd')
    with pytest.raises(ValueError, match='gradient_reduction must be one of'):
        CRCDLoss(
            relation='gradient', student_channels=4, teacher_channels=4, gradient_reduction='avg'
        )


# -------------------------------------------------------------- DCD and CKD
def authors_dcd(f_s, f_t, tau, b, max_tau=10.0, alpha=0.5):
    """giakoumoglou/distillers DCD.py on already normalised embeddings."""
    logits = torch.mm(f_s, f_t.t()) * tau.exp().clamp(0, max_tau) + b
    labels = torch.arange(f_s.shape[0])
    invariance = F.kl_div(
        F.log_softmax(logits, dim=1), F.softmax(logits, dim=0).t(), reduction='batchmean'
    )
    return F.cross_entropy(logits, labels) + alpha * invariance


@pytest.mark.parametrize('learnable', [True, False])
def test_dcd_is_the_authors_loss(learnable):
    gen = torch.Generator().manual_seed(2)
    s = F.normalize(torch.randn(6, 8, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    t = F.normalize(torch.randn(6, 8, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    loss = DCDLoss(init_temperature=0.7, init_bias=0.3, learnable_logit_scale=learnable).double()
    assert (dict(loss.named_parameters()).keys() == {'tau', 'bias'}) is learnable
    assert (dict(loss.named_buffers()).keys() == {'tau', 'bias'}) is not learnable
    # the authors' LearnableParams at our initial values (0.7 and 0.3 as float32 numbers)
    tau, b = loss.tau.detach().clone().requires_grad_(), loss.bias.detach().clone()
    theirs = authors_dcd(s, t, tau, b)
    check_close_with_gradients(loss(s, t), theirs, (s, t))
    if learnable:
        (g_ours,) = torch.autograd.grad(loss(s, t), loss.tau)
        torch.testing.assert_close(g_ours, torch.autograd.grad(theirs, tau)[0])


def test_ckd_is_the_authors_loss():
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(6, 10, dtype=torch.float64, generator=gen).requires_grad_()
    t = torch.randn(6, 10, dtype=torch.float64, generator=gen)
    similarity = F.normalize(t, dim=1) @ F.normalize(s, dim=1).t()
    theirs = 10.0 * F.cross_entropy(similarity / 1.0, torch.arange(6))
    check_close_with_gradients(CKDLoss(loss_weight=10.0)(s, t), theirs, (s,))


@pytest.mark.parametrize('learnable', [True, False])
def test_dcd_logit_scale_trains_only_when_learnable(imagefolder, tmp_path, learnable):
    """A real Runner, one epoch (2 iterations): tau and b move (b by weight decay) iff learnable."""
    loss = dict(
        type='DCDLoss', init_temperature=1.0, init_bias=0.5, learnable_logit_scale=learnable
    )
    distiller = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        distill_losses=dict(loss_dcd=loss),
        connectors=dict(
            s=dict(type='CRDConnector', dim_in=16, dim_out=8),
            t=dict(type='CRDConnector', dim_in=32, dim_out=8),
        ),
        loss_forward_mappings=dict(
            loss_dcd=dict(
                s_embeds=dict(from_student=True, recorder='feat', connector='s'),
                t_embeds=dict(from_student=False, recorder='feat', connector='t'),
            )
        ),
    )
    cfg = distill_config(imagefolder, tmp_path / 'work', distiller, hooks=[])
    cfg.optim_wrapper.optimizer.weight_decay = 0.01
    cfg.default_hooks.checkpoint = None
    runner = Runner.from_cfg(cfg)
    dcd = runner.model.distiller.distill_losses['loss_dcd']
    runner.train()
    optimised = {
        id(p) for group in runner.optim_wrapper.optimizer.param_groups for p in group['params']
    }
    assert (id(dcd.tau) in optimised) is learnable and (id(dcd.bias) in optimised) is learnable
    assert runner.iter == 2
    if learnable:
        assert dcd.tau.item() != 1.0 and dcd.bias.item() != 0.5
    else:
        assert dcd.tau.item() == 1.0 and dcd.bias.item() == 0.5


@pytest.mark.slow
def test_crcd_trains_with_every_authors_option(make_imagefolder, tmp_path):
    """A real Runner epoch, both relations in the authors' form: finite, positive, banks written."""
    distiller = crcd_distiller()
    distiller['distill_losses']['loss_crcd'].update(include_self_pairs=True)
    distiller['distill_losses']['loss_crcd_grad'].update(
        include_self_pairs=True, gradient_reduction='mean', gradient_combine='multiply_kd'
    )
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    runner = Runner.from_cfg(distill_config(data, tmp_path / 'work', distiller, max_epochs=1))
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
    assert all(bank.written.all() for bank in hook.banks.values())
    for name in ('train/distill.loss_crcd', 'train/distill.loss_crcd_grad'):
        history = runner.message_hub.log_scalars[name].data[0]
        assert len(history) == 3 and (history > 0).all()
