# CRD, wrn_40_2 -> wrn_40_1 on CIFAR-100 (paper's top-1: 74.14).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py.
_base_ = '../../_base_/recipes/cifar100_crd.py'

model = dict(
    architecture=_base_.cifar_networks.wrn_40_1,
    teacher=_base_.cifar_networks.wrn_40_2,
    teacher_ckpt='work_dirs/wrn_40_2_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=64), crd_t=dict(dim_in=128))),
)
