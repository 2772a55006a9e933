"""Tests for DCDLoss and CKDLoss: published check values, gradients, and training in mmrazor."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import Runner
from mmrazor.registry import MODELS
from tiny_configs import image_folder_loader, tiny_classifier
from torch.func import functional_call

from crd_mm.models.losses import CKDLoss, DCDLoss


# ---------------------------------------------------------------- DCD values
def test_dcd_check_value_on_identity_embeddings():
    """REFERENCE.md: z_s = z_t = I_4, tau = 1, b = 0 gives DCD = log(1 + 3 e^-e)."""
    eye = torch.eye(4)
    loss = DCDLoss()
    contrastive, consistency = loss.loss_terms(eye, eye)
    assert consistency.item() == pytest.approx(0.0, abs=1e-7)
    assert contrastive.item() == pytest.approx(0.180624, abs=1e-6)
    assert loss(eye, eye).item() == pytest.approx(0.180624, abs=1e-6)
    assert DCDLoss(loss_weight=2.0)(eye, eye).item() == pytest.approx(2 * 0.180624, abs=1e-6)


@pytest.mark.parametrize('tau', [-1.0, 0.0, 1.0, 3.0])
def test_dcd_logit_scale_is_clamped(tau):
    """On I_B the loss is log(1 + (B - 1) exp(-min(e^tau, 10))).

    Above the clamp, tau gets no gradient.
    """
    eye = torch.eye(5, dtype=torch.float64)
    loss = DCDLoss(init_temperature=tau).double()
    scale = min(math.exp(tau), 10.0)
    value = loss(eye, eye)
    assert value.item() == pytest.approx(math.log1p(4 * math.exp(-scale)), rel=1e-9)
    value.backward()
    if math.exp(tau) > 10.0:
        assert loss.tau.grad.item() == 0.0
    else:
        assert loss.tau.grad.item() < 0  # a larger scale sharpens the diagonal


def test_dcd_consistency_penalises_asymmetric_logits():
    """The KL term is zero for symmetric logits and positive otherwise."""
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 8), dim=1)
    loss = DCDLoss()
    _, symmetric = loss.loss_terms(z, z)
    assert symmetric.item() == pytest.approx(0.0, abs=1e-6)
    z_t = F.normalize(torch.randn(6, 8), dim=1)
    contrastive, consistency = loss.loss_terms(z, z_t)
    assert consistency.item() > 1e-4
    expected = contrastive + 0.5 * consistency
    assert loss(z, z_t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dcd_bias_gradient_is_zero():
    """b shifts every logit equally, so it cancels in all softmaxes."""
    torch.manual_seed(1)
    s = F.normalize(torch.randn(8, 16, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(8, 16, dtype=torch.float64), dim=1)
    loss = DCDLoss(init_bias=0.7).double()
    value = loss(s, t)
    value.backward()
    assert loss.bias.grad is not None
    assert loss.bias.grad.item() == pytest.approx(0.0, abs=1e-12)
    assert loss.tau.grad.abs().item() > 1e-6
    with torch.no_grad():
        loss.bias.fill_(-3.0)
    assert loss(s, t).item() == pytest.approx(value.item(), abs=1e-12)


def test_dcd_gradcheck_inputs_and_tau():
    torch.manual_seed(2)
    s = F.normalize(torch.randn(5, 6, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(5, 6, dtype=torch.float64), dim=1)
    s.requires_grad_(True)
    t.requires_grad_(True)
    tau = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    loss = DCDLoss(loss_weight=1.5).double()

    def dcd(s_in, t_in, tau_in):
        return functional_call(loss, {'tau': tau_in, 'bias': loss.bias}, (s_in, t_in))

    assert torch.autograd.gradcheck(dcd, (s, t, tau))


def test_dcd_parameters_are_trainable():
    loss = DCDLoss(init_temperature=0.5, init_bias=0.1)
    params = dict(loss.named_parameters())
    assert set(params) == {'tau', 'bias'}
    assert params['tau'].requires_grad and params['bias'].requires_grad
    assert params['tau'].item() == pytest.approx(0.5)
    assert params['bias'].item() == pytest.approx(0.1)


# ---------------------------------------------------------------- CKD values
@pytest.mark.parametrize('temperature', [1.0, 0.5, 2.0])
def test_ckd_check_value_on_identity_logits(temperature):
    """REFERENCE.md: t = s = I_4, T = 1 gives log(1 + 3 e^-1) = 0.743668."""
    eye = torch.eye(4)
    value = CKDLoss(temperature=temperature)(eye, eye).item()
    assert value == pytest.approx(math.log1p(3 * math.exp(-1 / temperature)), abs=1e-6)
    if temperature == 1.0:
        assert value == pytest.approx(0.743668, abs=1e-6)


def test_ckd_ignores_logit_magnitude_and_weights_the_loss():
    """Logits are compared by direction: rescaling a sample's logits changes nothing."""
    torch.manual_seed(3)
    s = torch.randn(6, 10)
    t = torch.randn(6, 10)
    row_scale = torch.rand(6, 1) * 5 + 0.1
    value = CKDLoss()(s, t)
    assert CKDLoss()(s * row_scale, t * 3).item() == pytest.approx(value.item(), rel=1e-5)
    assert CKDLoss(loss_weight=10.0)(s, t).item() == pytest.approx(10 * value.item(), rel=1e-6)


def test_ckd_positive_is_the_same_sample():
    """Each teacher row must pick its own student sample: matching logits score lower."""
    torch.manual_seed(4)
    t = torch.randn(6, 10)
    aligned = CKDLoss()(t.clone(), t)
    shuffled = CKDLoss()(t[torch.tensor([1, 2, 3, 4, 5, 0])], t)
    assert aligned.item() < shuffled.item()


def test_ckd_gradcheck_inputs():
    torch.manual_seed(5)
    s = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(CKDLoss(temperature=0.5), (s, t))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize('loss_cls', [DCDLoss, CKDLoss])
def test_shape_mismatch_and_single_sample_are_refused(loss_cls):
    loss = loss_cls()
    with pytest.raises(ValueError, match='same shape'):
        loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match='same shape'):
        loss(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match='same shape'):
        loss(torch.randn(4, 8, 1), torch.randn(4, 8, 1))
    with pytest.raises(ValueError, match='at least 2'):
        loss(torch.randn(1, 8), torch.randn(1, 8))


def test_invalid_hyper_parameters_are_refused():
    with pytest.raises(ValueError, match='temperature'):
        CKDLoss(temperature=0.0)
    with pytest.raises(ValueError, match='max_logit_scale'):
        DCDLoss(max_logit_scale=-1.0)


# ---------------------------------------------------------------- registry
def test_losses_build_from_mmrazor_registry():
    dcd = MODELS.build(
        dict(_scope_='mmrazor', type='DCDLoss', loss_weight=2.0, consistency_weight=0.25)
    )
    ckd = MODELS.build(dict(type='mmrazor.CKDLoss', temperature=0.5))
    assert isinstance(dcd, DCDLoss)
    assert dcd.loss_weight == 2.0 and dcd.consistency_weight == 0.25
    assert isinstance(ckd, CKDLoss) and ckd.temperature == 0.5


# ---------------------------------------------------------------- training
MAX_ITERS = 3


def _train_distiller(data_root, work_dir, distiller):
    """A real Runner training SingleTeacherDistill for MAX_ITERS iterations."""
    return Runner(
        model=dict(
            _scope_='mmrazor',
            type='SingleTeacherDistill',
            data_preprocessor=dict(
                type='mmpretrain.ClsDataPreprocessor',
                mean=[127.5] * 3,
                std=[127.5] * 3,
                to_rgb=True,
            ),
            architecture=tiny_classifier(8),
            teacher=tiny_classifier(16),
            teacher_ckpt=None,
            distiller=distiller,
        ),
        work_dir=str(work_dir),
        experiment_name=f'dcd_ckd_{work_dir.parent.name}',
        train_dataloader=image_folder_loader(data_root, batch_size=4),
        train_cfg=dict(by_epoch=False, max_iters=MAX_ITERS),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4)),
        default_scope='mmrazor',
        default_hooks=dict(checkpoint=None),
        randomness=dict(seed=0),
        log_level='WARNING',
    )


def _logged_values(runner, key):
    values, _ = runner.message_hub.get_scalar(f'train/{key}').data
    return values


def test_dcd_trains_in_single_teacher_distill(imagefolder, tmp_path):
    distiller = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        distill_losses=dict(loss_dcd=dict(type='DCDLoss', loss_weight=1.0)),
        connectors=dict(
            dcd_s=dict(type='CRDConnector', dim_in=16, dim_out=32),
            dcd_t=dict(type='CRDConnector', dim_in=32, dim_out=32),
        ),
        loss_forward_mappings=dict(
            loss_dcd=dict(
                s_embeds=dict(from_student=True, recorder='feat', connector='dcd_s'),
                t_embeds=dict(from_student=False, recorder='feat', connector='dcd_t'),
            )
        ),
    )
    runner = _train_distiller(imagefolder, tmp_path / 'work', distiller)
    dcd = runner.model.distiller.distill_losses['loss_dcd']
    assert isinstance(dcd, DCDLoss)
    tau_before = dcd.tau.detach().clone()
    bias_before = dcd.bias.detach().clone()

    runner.train()

    values = _logged_values(runner, 'distill.loss_dcd')
    assert len(values) == MAX_ITERS
    assert np.isfinite(values).all()
    # tau reached the optimizer through the distiller's ModuleDict and moved.
    optimized = [
        p for group in runner.optim_wrapper.optimizer.param_groups for p in group['params']
    ]
    assert any(p is dcd.tau for p in optimized)
    assert not torch.equal(dcd.tau.detach(), tau_before)
    # b gets no gradient; only weight decay of an initial 0.0 could move it.
    assert dcd.bias.item() == pytest.approx(bias_before.item(), abs=1e-6)


def test_ckd_trains_in_single_teacher_distill(imagefolder, tmp_path):
    distiller = dict(
        type='ConfigurableDistiller',
        student_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
        teacher_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(loss_ckd=dict(type='CKDLoss', loss_weight=10.0)),
        loss_forward_mappings=dict(
            loss_ckd=dict(
                s_logits=dict(from_student=True, recorder='logits'),
                t_logits=dict(from_student=False, recorder='logits'),
            )
        ),
    )
    runner = _train_distiller(imagefolder, tmp_path / 'work', distiller)
    runner.train()

    values = _logged_values(runner, 'distill.loss_ckd')
    assert len(values) == MAX_ITERS
    assert np.isfinite(values).all()
    # A weighted CKD over 4 samples lies in (0, 10 * (log 4 + 2)].
    assert ((values > 0) & (values <= 10 * (math.log(4) + 2))).all()
    assert np.isfinite(_logged_values(runner, 'student.loss')).all()
