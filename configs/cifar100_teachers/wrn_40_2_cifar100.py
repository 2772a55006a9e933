# Teacher of the CRD CIFAR-100 benchmark (paper's top-1: 75.61). Its final
# checkpoint, work_dirs/wrn_40_2_cifar100/epoch_240.pth, is the teacher_ckpt
# of the distillation configs in configs/{crd,dcd,crcd,ckd}/cifar100/.
_base_ = [
    '../_base_/models/cifar_classifier.py',
    '../_base_/datasets/cifar100_crd.py',
    '../_base_/schedules/cifar100_crd_240e.py',
]

model = dict(backbone=dict(type='CifarWideResNet', arch='wrn_40_2'), head=dict(in_channels=128))
