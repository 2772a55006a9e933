# CKD, wrn_40_2 -> wrn_40_1 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + w * CKD on the logits, 480 epochs with cosine decay, see
# ../../_base_/models/cifar_ckd_distill.py. The CKD authors' settings for
# this pair: w = 50, T = 2, batch 32, lr 0.05 (ZhouXinzzzzz/CKD,
# configs/cifar100/ckd/wrn40_2_wrn_40_1.yaml).
_base_ = [
    '../../_base_/models/cifar_ckd_distill.py',
    '../../_base_/datasets/cifar100_crd.py',
    '../../_base_/schedules/cifar100_ckd_480e.py',
]

model = dict(
    architecture=dict(
        backbone=dict(type='CifarWideResNet', arch='wrn_40_1'), head=dict(in_channels=64)
    ),
    teacher=dict(
        backbone=dict(type='CifarWideResNet', arch='wrn_40_2'), head=dict(in_channels=128)
    ),
    # the last checkpoint of configs/cifar100_teachers/wrn_40_2_cifar100.py
    # in tools/train.py's default work_dir (relative to the repository root)
    teacher_ckpt='work_dirs/wrn_40_2_cifar100/epoch_240.pth',
    distiller=dict(distill_losses=dict(loss_ckd=dict(loss_weight=50.0, temperature=2.0))),
)

train_dataloader = dict(batch_size=32)
