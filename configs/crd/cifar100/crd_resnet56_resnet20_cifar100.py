# CRD, resnet56 -> resnet20 on CIFAR-100 (paper's top-1: 71.16).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py.
_base_ = [
    '../../_base_/models/cifar_crd_distill.py',
    '../../_base_/datasets/cifar100_crd.py',
    '../../_base_/schedules/cifar100_crd_240e.py',
]

model = dict(
    architecture=dict(
        backbone=dict(type='CifarResNet', arch='resnet20'), head=dict(in_channels=64)
    ),
    teacher=dict(backbone=dict(type='CifarResNet', arch='resnet56'), head=dict(in_channels=64)),
    # the last checkpoint of configs/cifar100_teachers/resnet56_cifar100.py
    # in tools/train.py's default work_dir (relative to the repository root)
    teacher_ckpt='work_dirs/resnet56_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=64), crd_t=dict(dim_in=64))),
)
