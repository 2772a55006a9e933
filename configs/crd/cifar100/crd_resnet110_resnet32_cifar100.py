# CRD, resnet110 -> resnet32 on CIFAR-100 (paper's top-1: 73.48).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py. The YAML
# twin crd_resnet110_resnet32_cifar100.yaml holds the same recipe.
_base_ = [
    '../../_base_/models/cifar_crd_distill.py',
    '../../_base_/datasets/cifar100_crd.py',
    '../../_base_/schedules/cifar100_crd_240e.py',
]

model = dict(
    architecture=dict(
        backbone=dict(type='CifarResNet', arch='resnet32'), head=dict(in_channels=64)
    ),
    teacher=dict(backbone=dict(type='CifarResNet', arch='resnet110'), head=dict(in_channels=64)),
    # the last checkpoint of configs/cifar100_teachers/resnet110_cifar100.py
    # in tools/train.py's default work_dir (relative to the repository root)
    teacher_ckpt='work_dirs/resnet110_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=64), crd_t=dict(dim_in=64))),
)
