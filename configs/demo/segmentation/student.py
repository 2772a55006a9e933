# The segmentation demo's baseline: the student (PSPNet on a dilated ResNetV1c-18 with 8
# base channels) trained alone with cross-entropy.
_base_ = ['./_shapes.py']

default_scope = 'mmseg'
model = _base_.student_net
