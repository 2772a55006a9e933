# CRD, wrn_40_2 -> ShuffleNetV1 on CIFAR-100 (paper's top-1: 76.05).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py.
_base_ = '../../_base_/recipes/cifar100_crd_mobile_student.py'

model = dict(
    architecture=_base_.cifar_networks.shufflenetv1,
    teacher=_base_.cifar_networks.wrn_40_2,
    teacher_ckpt='work_dirs/wrn_40_2_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=960), crd_t=dict(dim_in=128))),
)
