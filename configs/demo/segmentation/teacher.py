# The segmentation demo's teacher: PSPNet on a dilated ResNetV1c-18 with 16 base channels,
# trained alone with cross-entropy on SyntheticShapes. Its last checkpoint
# (work_dirs/demo/segmentation/teacher/iter_1000.pth) is the distillation configs' teacher_ckpt.
_base_ = ['./_shapes.py']

default_scope = 'mmseg'
model = _base_.teacher_net

teacher_iters = 1000
train_cfg = dict(max_iters=teacher_iters, val_interval=teacher_iters)
param_scheduler = dict(end=teacher_iters)
