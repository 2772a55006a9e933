# KD (Hinton et al.): CE 1.0 + KL divergence of the T=4 softened logits 1.0.
_base_ = ['./_base_distill.py']

model = dict(
    distiller=dict(
        distill_losses=dict(
            loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0)),
        loss_forward_mappings=dict(
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                preds_T=dict(from_student=False, recorder='logits')))))
