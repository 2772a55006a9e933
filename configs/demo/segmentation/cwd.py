# Segmentation demo: CE + CWD on the logits (_distill.py).
_base_ = ['./_distill.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_cwd=_base_.cwd_loss),
        loss_forward_mappings=dict(loss_cwd=_base_.cwd_mapping),
    )
)
