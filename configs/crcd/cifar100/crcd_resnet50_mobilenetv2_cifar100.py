# CRCD, ResNet50 -> MobileNetV2 on CIFAR-100 (paper's number: not retrieved).
# CE 1.0 + KD 0.9 + feature and gradient relations 1.0 each, stopped for
# the last 10 of 250 epochs, see ../../_base_/models/cifar_crcd_distill.py.
_base_ = '../../_base_/recipes/cifar100_crcd_mobile_student.py'

model = dict(
    architecture=_base_.cifar_networks.mobilenetv2,
    teacher=_base_.cifar_networks.resnet50,
    teacher_ckpt='work_dirs/resnet50_cifar100/epoch_240.pth',
    distiller=dict(
        connectors=dict(crd_s=dict(dim_in=1280), crd_t=dict(dim_in=2048)),
        distill_losses=dict(loss_crcd_grad=dict(student_channels=1280, teacher_channels=2048)),
    ),
)
