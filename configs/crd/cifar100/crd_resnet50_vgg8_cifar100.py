# CRD, ResNet50 -> vgg8 on CIFAR-100 (paper's top-1: 74.30).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py.
_base_ = '../../_base_/recipes/cifar100_crd.py'

model = dict(
    architecture=_base_.cifar_networks.vgg8,
    teacher=_base_.cifar_networks.resnet50,
    teacher_ckpt='work_dirs/resnet50_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=512), crd_t=dict(dim_in=2048))),
)
