# CKD, vgg13 -> MobileNetV2 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + w * CKD on the logits, 480 epochs with cosine decay, see
# ../../_base_/models/cifar_ckd_distill.py. The CKD authors' settings for
# this pair: w = 50, T = 2, batch 32, lr 0.01 (ZhouXinzzzzz/CKD,
# configs/cifar100/ckd/vgg13_mv2.yaml).
_base_ = '../../_base_/recipes/cifar100_ckd_mobile_student.py'

model = dict(
    architecture=_base_.cifar_networks.mobilenetv2,
    teacher=_base_.cifar_networks.vgg13,
    teacher_ckpt='work_dirs/vgg13_cifar100/epoch_240.pth',
    distiller=dict(distill_losses=dict(loss_ckd=dict(loss_weight=50.0, temperature=2.0))),
)

train_dataloader = dict(batch_size=32)
