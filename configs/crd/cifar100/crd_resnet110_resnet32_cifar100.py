# CRD, resnet110 -> resnet32 on CIFAR-100 (paper's top-1: 73.48).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py. The YAML
# twin crd_resnet110_resnet32_cifar100.yaml holds the same recipe.
_base_ = '../../_base_/recipes/cifar100_crd.py'

model = dict(
    architecture=_base_.cifar_networks.resnet32,
    teacher=_base_.cifar_networks.resnet110,
    teacher_ckpt='work_dirs/resnet110_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=64), crd_t=dict(dim_in=64))),
)
