# KD (Hinton et al.): CE 1.0 + KL divergence of the T=4 softened logits 1.0.
_base_ = ['./_base_distill.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_kd=_base_.kd_loss),
        loss_forward_mappings=dict(loss_kd=_base_.kd_mapping),
    )
)
