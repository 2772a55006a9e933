# CKD, vgg13 -> vgg8 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + w * CKD on the logits, 480 epochs with cosine decay, see
# ../../_base_/models/cifar_ckd_distill.py. The CKD authors' settings for
# this pair: w = 100, T = 1 (ZhouXinzzzzz/CKD,
# configs/cifar100/ckd/vgg13_vgg8.yaml).
_base_ = '../../_base_/recipes/cifar100_ckd.py'

model = dict(
    architecture=_base_.cifar_networks.vgg8,
    teacher=_base_.cifar_networks.vgg13,
    teacher_ckpt='work_dirs/vgg13_cifar100/epoch_240.pth',
    distiller=dict(distill_losses=dict(loss_ckd=dict(loss_weight=100.0, temperature=1.0))),
)
