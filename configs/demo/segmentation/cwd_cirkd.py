# Segmentation demo: CE + CWD on the logits + CIRKD's pixel and region memory terms on the
# features before the classifier (_distill.py).
_base_ = ['./_distill.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_cwd=_base_.cwd_loss, loss_cirkd=_base_.cirkd_loss),
        loss_forward_mappings=dict(loss_cwd=_base_.cwd_mapping, loss_cirkd=_base_.cirkd_mapping),
    )
)

# owns CIRKD's pixel and region memories and checkpoints them
custom_hooks = [dict(type='CRDMemoryBankHook')]
