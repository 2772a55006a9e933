# CKD, resnet32x4 -> ShuffleNetV1 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + w * CKD on the logits, 480 epochs with cosine decay, see
# ../../_base_/models/cifar_ckd_distill.py. The CKD authors' settings for
# this pair: w = 100, T = 1, batch 32, lr 0.01 (ZhouXinzzzzz/CKD,
# configs/cifar100/ckd/res32x4_shuv1.yaml).
_base_ = [
    '../../_base_/models/cifar_ckd_distill.py',
    '../../_base_/datasets/cifar100_crd.py',
    '../../_base_/schedules/cifar100_ckd_480e.py',
]

model = dict(
    architecture=dict(backbone=dict(type='CifarShuffleNetV1'), head=dict(in_channels=960)),
    teacher=dict(backbone=dict(type='CifarResNet', arch='resnet32x4'), head=dict(in_channels=256)),
    # the last checkpoint of configs/cifar100_teachers/resnet32x4_cifar100.py
    # in tools/train.py's default work_dir (relative to the repository root)
    teacher_ckpt='work_dirs/resnet32x4_cifar100/epoch_240.pth',
    distiller=dict(distill_losses=dict(loss_ckd=dict(loss_weight=100.0, temperature=1.0))),
)

optim_wrapper = dict(optimizer=dict(lr=0.01))
train_dataloader = dict(batch_size=32)
