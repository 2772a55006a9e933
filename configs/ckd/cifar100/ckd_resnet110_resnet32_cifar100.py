# CKD, resnet110 -> resnet32 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + w * CKD on the logits, 480 epochs with cosine decay, see
# ../../_base_/models/cifar_ckd_distill.py. The CKD authors' settings for
# this pair: w = 10, T = 1 (ZhouXinzzzzz/CKD,
# configs/cifar100/ckd/res110_res32.yaml).
_base_ = [
    '../../_base_/models/cifar_ckd_distill.py',
    '../../_base_/datasets/cifar100_crd.py',
    '../../_base_/schedules/cifar100_ckd_480e.py',
]

model = dict(
    architecture=dict(
        backbone=dict(type='CifarResNet', arch='resnet32'), head=dict(in_channels=64)
    ),
    teacher=dict(backbone=dict(type='CifarResNet', arch='resnet110'), head=dict(in_channels=64)),
    # the last checkpoint of configs/cifar100_teachers/resnet110_cifar100.py
    # in tools/train.py's default work_dir (relative to the repository root)
    teacher_ckpt='work_dirs/resnet110_cifar100/epoch_240.pth',
    distiller=dict(distill_losses=dict(loss_ckd=dict(loss_weight=10.0, temperature=1.0))),
)
