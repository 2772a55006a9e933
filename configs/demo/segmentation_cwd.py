# Segmentation demo: CE + CWD on the logits (segmentation_distill_base.py).
_base_ = ['./segmentation_distill_base.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_cwd=_base_.cwd_loss),
        loss_forward_mappings=dict(loss_cwd=_base_.cwd_mapping),
    )
)
