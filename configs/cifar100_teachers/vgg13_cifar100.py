# Teacher of the CRD CIFAR-100 benchmark (paper's top-1: 74.64). Its final
# checkpoint, work_dirs/vgg13_cifar100/epoch_240.pth, is the teacher_ckpt
# of the distillation configs in configs/{crd,dcd,crcd,ckd}/cifar100/.
_base_ = [
    '../_base_/models/cifar_classifier.py',
    '../_base_/datasets/cifar100_crd.py',
    '../_base_/schedules/cifar100_crd_240e.py',
]

model = dict(backbone=dict(type='CifarVGG', arch='vgg13'), head=dict(in_channels=512))
