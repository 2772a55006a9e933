# The demo's teacher: CifarResNet resnet20 trained alone with cross-entropy
# on all 1,433 training images (the students see 10 per class). Its last
# checkpoint is the `teacher_ckpt` of the distillation configs.
_base_ = ['./_base_digits.py']

default_scope = 'mmpretrain'
model = _base_.teacher_net

teacher_epochs = 15
train_dataloader = dict(dataset=dict(samples_per_class=None))
train_cfg = dict(max_epochs=teacher_epochs, val_interval=5)
param_scheduler = dict(T_max=teacher_epochs)
default_hooks = dict(logger=dict(interval=10))
