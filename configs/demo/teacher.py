# The demo's teacher: CifarResNet resnet20 trained alone with cross-entropy.
# Its last checkpoint is the `teacher_ckpt` of the distillation configs.
_base_ = ['./_base_digits.py']

default_scope = 'mmpretrain'
model = _base_.teacher_net

# a longer schedule than the students' 10 epochs: a converged teacher
teacher_epochs = 30
train_cfg = dict(max_epochs=teacher_epochs)
param_scheduler = dict(T_max=teacher_epochs)
