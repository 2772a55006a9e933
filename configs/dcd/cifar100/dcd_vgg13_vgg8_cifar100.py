# DCD, vgg13 -> vgg8 on CIFAR-100 (paper's top-1: 73.22).
# CE 1.0 + DCD 1.0 (alpha 0, beta 1), see
# ../../_base_/models/cifar_dcd_distill.py; the CRD paper's 240-epoch schedule.
_base_ = '../../_base_/recipes/cifar100_dcd.py'

model = dict(
    architecture=_base_.cifar_networks.vgg8,
    teacher=_base_.cifar_networks.vgg13,
    teacher_ckpt='work_dirs/vgg13_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=512), crd_t=dict(dim_in=512))),
)
