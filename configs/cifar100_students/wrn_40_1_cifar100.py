# wrn_40_1 trained alone on CIFAR-100 with CE only: the "student" column of the
# CRD paper's table (paper's top-1: 71.98), the baseline every
# distillation recipe with this student is compared against.
_base_ = [
    '../_base_/models/cifar_classifier.py',
    '../_base_/datasets/cifar100_crd.py',
    '../_base_/schedules/cifar100_crd_240e.py',
]

model = dict(backbone=dict(type='CifarWideResNet', arch='wrn_40_1'), head=dict(in_channels=64))
