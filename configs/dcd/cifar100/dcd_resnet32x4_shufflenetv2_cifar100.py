# DCD, resnet32x4 -> ShuffleNetV2 on CIFAR-100 (paper's top-1: 75.26).
# CE 1.0 + DCD 1.0 (alpha 0, beta 1), see
# ../../_base_/models/cifar_dcd_distill.py; the CRD paper's 240-epoch schedule.
_base_ = [
    '../../_base_/models/cifar_dcd_distill.py',
    '../../_base_/datasets/cifar100_crd.py',
    '../../_base_/schedules/cifar100_crd_240e.py',
]

model = dict(
    architecture=dict(backbone=dict(type='CifarShuffleNetV2'), head=dict(in_channels=1024)),
    teacher=dict(backbone=dict(type='CifarResNet', arch='resnet32x4'), head=dict(in_channels=256)),
    # the last checkpoint of configs/cifar100_teachers/resnet32x4_cifar100.py
    # in tools/train.py's default work_dir (relative to the repository root)
    teacher_ckpt='work_dirs/resnet32x4_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=1024), crd_t=dict(dim_in=256))),
)

# the authors train MobileNetV2 / ShuffleNet students with lr 0.01
optim_wrapper = dict(optimizer=dict(lr=0.01))
