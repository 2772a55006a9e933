# CRD, vgg13 -> MobileNetV2 on CIFAR-100 (paper's top-1: 69.73).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py.
_base_ = '../../_base_/recipes/cifar100_crd_mobile_student.py'

model = dict(
    architecture=_base_.cifar_networks.mobilenetv2,
    teacher=_base_.cifar_networks.vgg13,
    teacher_ckpt='work_dirs/vgg13_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=1280), crd_t=dict(dim_in=512))),
)
