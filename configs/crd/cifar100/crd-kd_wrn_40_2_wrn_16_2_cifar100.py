# CRD+KD, wrn_40_2 -> wrn_16_2 on CIFAR-100 (paper's top-1: 75.64).
# The CRD recipe plus KD 1.0 at T=4 on the logits
# (../../_base_/distillers/kd.py): CE 1.0 + KD 1.0 + CRD 0.8.
_base_ = ['./crd_wrn_40_2_wrn_16_2_cifar100.py', '../../_base_/distillers/kd.py']

model = dict(distiller=_base_.kd_distiller)
