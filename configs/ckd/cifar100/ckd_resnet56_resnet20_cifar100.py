# CKD, resnet56 -> resnet20 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + w * CKD on the logits, 480 epochs with cosine decay, see
# ../../_base_/models/cifar_ckd_distill.py. The CKD authors' settings for
# this pair: w = 10, T = 1 (ZhouXinzzzzz/CKD,
# configs/cifar100/ckd/res56_res20.yaml).
_base_ = '../../_base_/recipes/cifar100_ckd.py'

model = dict(
    architecture=_base_.cifar_networks.resnet20,
    teacher=_base_.cifar_networks.resnet56,
    teacher_ckpt='work_dirs/resnet56_cifar100/epoch_240.pth',
    distiller=dict(distill_losses=dict(loss_ckd=dict(loss_weight=10.0, temperature=1.0))),
)
