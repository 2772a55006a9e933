# DCD+KD, vgg13 -> vgg8 on CIFAR-100 (paper's top-1: 73.95).
# The DCD recipe plus KD 1.0 at T=4 on the logits
# (../../_base_/distillers/kd.py): CE 1.0 + KD 1.0 + DCD 1.0 (alpha 1, beta 1).
_base_ = ['./dcd_vgg13_vgg8_cifar100.py', '../../_base_/distillers/kd.py']

model = dict(distiller=_base_.kd_distiller)
