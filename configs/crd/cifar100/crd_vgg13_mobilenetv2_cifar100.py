# CRD, vgg13 -> MobileNetV2 on CIFAR-100 (paper's top-1: 69.73).
# CE 1.0 + CRD 0.8, see ../../_base_/models/cifar_crd_distill.py.
_base_ = [
    '../../_base_/models/cifar_crd_distill.py',
    '../../_base_/datasets/cifar100_crd.py',
    '../../_base_/schedules/cifar100_crd_240e.py',
]

model = dict(
    architecture=dict(backbone=dict(type='CifarMobileNetV2'), head=dict(in_channels=1280)),
    teacher=dict(backbone=dict(type='CifarVGG', arch='vgg13'), head=dict(in_channels=512)),
    # the last checkpoint of configs/cifar100_teachers/vgg13_cifar100.py
    # in tools/train.py's default work_dir (relative to the repository root)
    teacher_ckpt='work_dirs/vgg13_cifar100/epoch_240.pth',
    distiller=dict(connectors=dict(crd_s=dict(dim_in=1280), crd_t=dict(dim_in=512))),
)

# the authors train MobileNetV2 / ShuffleNet students with lr 0.01
optim_wrapper = dict(optimizer=dict(lr=0.01))
