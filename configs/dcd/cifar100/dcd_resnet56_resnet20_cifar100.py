# DCD, resnet56 -> resnet20 on CIFAR-100 (paper's top-1: 71.18).
# CE 1.0 + DCD 1.0 (alpha 0, beta 1), see
# ../../_base_/models/cifar_dcd_distill.py; the CRD paper's 240-epoch schedule.
_base_ = '../../_base_/recipes/cifar100_dcd.py'

model = dict(
    architecture=_base_.cifar_networks.resnet20,
    teacher=_base_.cifar_networks.resnet56,
    teacher_ckpt='work_dirs/resnet56_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=64), crd_t=dict(dim_in=64))),
)
