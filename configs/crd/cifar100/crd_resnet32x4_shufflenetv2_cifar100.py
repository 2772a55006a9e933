# CRD, resnet32x4 -> ShuffleNetV2 on CIFAR-100 (paper's top-1: 75.65).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py.
_base_ = '../../_base_/recipes/cifar100_crd_mobile_student.py'

model = dict(
    architecture=_base_.cifar_networks.shufflenetv2,
    teacher=_base_.cifar_networks.resnet32x4,
    teacher_ckpt='work_dirs/resnet32x4_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=1024), crd_t=dict(dim_in=256))),
)
