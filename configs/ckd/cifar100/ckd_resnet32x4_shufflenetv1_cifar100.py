# CKD, resnet32x4 -> ShuffleNetV1 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + w * CKD on the logits, 480 epochs with cosine decay, see
# ../../_base_/models/cifar_ckd_distill.py. The CKD authors' settings for
# this pair: w = 100, T = 1, batch 32, lr 0.01 (ZhouXinzzzzz/CKD,
# configs/cifar100/ckd/res32x4_shuv1.yaml).
_base_ = '../../_base_/recipes/cifar100_ckd_mobile_student.py'

model = dict(
    architecture=_base_.cifar_networks.shufflenetv1,
    teacher=_base_.cifar_networks.resnet32x4,
    teacher_ckpt='work_dirs/resnet32x4_cifar100/epoch_240.pth',
    distiller=dict(distill_losses=dict(loss_ckd=dict(loss_weight=100.0, temperature=1.0))),
)

train_dataloader = dict(batch_size=32)
