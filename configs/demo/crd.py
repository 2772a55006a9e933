# CRD (Tian et al., ICLR 2020): CE 1.0 + CRD 0.8 (`crd_loss` of
# _base_distill.py: 128-d embedding heads, memory banks, 64 negatives from the
# other classes).
_base_ = ['./_base_distill.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_crd=_base_.crd_loss),
        connectors=_base_.crd_connectors,
        loss_forward_mappings=dict(loss_crd=_base_.crd_mapping),
    )
)

custom_hooks = [dict(type='CRDMemoryBankHook')]
