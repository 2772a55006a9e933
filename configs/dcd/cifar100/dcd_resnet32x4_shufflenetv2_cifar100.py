# DCD, resnet32x4 -> ShuffleNetV2 on CIFAR-100 (paper's top-1: 75.26).
# CE 1.0 + DCD 1.0 (alpha 0, beta 1), see
# ../../_base_/models/cifar_dcd_distill.py; the CRD paper's 240-epoch schedule.
_base_ = '../../_base_/recipes/cifar100_dcd_mobile_student.py'

model = dict(
    architecture=_base_.cifar_networks.shufflenetv2,
    teacher=_base_.cifar_networks.resnet32x4,
    teacher_ckpt='work_dirs/resnet32x4_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=1024), crd_t=dict(dim_in=256))),
)
