# The demo's teacher: CifarResNet resnet20 trained alone with cross-entropy.
# Its last checkpoint is the `teacher_ckpt` of the distillation configs.
_base_ = ['./_base_digits.py']

default_scope = 'mmpretrain'
model = _base_.teacher_net
