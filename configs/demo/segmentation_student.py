# The segmentation demo's baseline: the student (PSPNet on a dilated ResNetV1c-18 with 16
# base channels) trained alone with cross-entropy.
_base_ = ['./segmentation_base.py']

default_scope = 'mmseg'
model = _base_.student_net
