# DCD+KD, ResNet-34 -> ResNet-18 on ImageNet-1k: the DCD config plus KD 1.0
# at T=4 on the logits (alpha 1, beta 1); tau and b fixed as there
# (learnable_logit_scale=False, the authors' ImageNet script).
_base_ = ['./dcd_resnet34_resnet18_in1k.py', '../_base_/distillers/kd.py']

model = dict(distiller=_base_.kd_distiller)
