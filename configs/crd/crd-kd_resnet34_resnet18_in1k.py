# CRD+KD, ResNet-34 -> ResNet-18 on ImageNet-1k (paper's top-1/top-5:
# 71.38/90.49). The CRD config plus KD 1.0 at T=4 on the logits:
# CE 1.0 + KD 1.0 + CRD 0.8.
_base_ = ['./resnet34_resnet18_in1k.py', '../_base_/distillers/kd.py']

model = dict(distiller=_base_.kd_distiller)
