# CRD+KD (Tian et al., ICLR 2020): CE 1.0 + KD (T=4) 1.0 + CRD 0.8, the
# CRD paper's best combination: crd.py plus the KD term.
_base_ = ['./crd.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_kd=_base_.kd_loss),
        loss_forward_mappings=dict(loss_kd=_base_.kd_mapping),
    )
)
