# CKD, ResNet-34 -> ResNet-18 on ImageNet-1k: the data, schedule, networks
# and teacher checkpoint of ../crd/resnet34_resnet18_in1k.py with CE 1.0 +
# 10 * CKD on the logits (w = 10, the paper's ImageNet weight) in place of
# CRD; no embedding heads and no memory bank.
_base_ = ['../crd/resnet34_resnet18_in1k.py', '../_base_/distillers/ckd.py']

model = dict(
    distiller=dict(_base_.ckd_distiller, _delete_=True))

custom_hooks = []
