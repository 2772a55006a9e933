# The demo's baseline: the student, CifarResNet resnet8, trained alone with
# cross-entropy (the row every distillation row is compared with).
_base_ = ['./_base_digits.py']

default_scope = 'mmpretrain'
model = _base_.student_net
