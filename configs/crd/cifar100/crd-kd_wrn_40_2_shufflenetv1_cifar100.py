# CRD+KD, wrn_40_2 -> ShuffleNetV1 on CIFAR-100 (paper's top-1: 76.27).
# The CRD recipe plus KD 1.0 at T=4 on the logits
# (../../_base_/distillers/kd.py): CE 1.0 + KD 1.0 + CRD 0.8.
_base_ = ['./crd_wrn_40_2_shufflenetv1_cifar100.py', '../../_base_/distillers/kd.py']

model = dict(distiller=_base_.kd_distiller)
