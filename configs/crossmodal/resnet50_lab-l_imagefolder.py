# The teacher of the colour-channel transfer: mmpretrain's ResNet-50 with a
# one-channel stem, trained with cross-entropy on the L channel of CIE Lab
# images from an image folder (layout: configs/_base_/datasets/imagefolder_lab.py),
# with mmpretrain's ImageNet ResNet schedule. Its last checkpoint is the
# `teacher_ckpt` of crd_lab-l-resnet50_lab-ab-resnet18_imagefolder.py:
#   python tools/train.py configs/crossmodal/resnet50_lab-l_imagefolder.py \
#       --work-dir work_dirs/crossmodal/resnet50_lab-l_imagefolder
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    '../_base_/datasets/imagefolder_lab.py',
    '../_base_/schedules/imagenet_bs256_100e.py',
]

default_scope = 'mmpretrain'
custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

num_classes = 1000  # the number of class folders of your dataset

model = dict(backbone=dict(in_channels=1), head=dict(num_classes=num_classes))

# the teacher's own training: L only, no second view
data_preprocessor = _base_.l_preprocessor
train_dataloader = dict(
    dataset=dict(pipeline=_base_.train_crop + _base_.lab_l + [dict(type='PackInputs')])
)
val_dataloader = dict(
    dataset=dict(pipeline=_base_.test_crop + _base_.lab_l + [dict(type='PackInputs')])
)
test_dataloader = val_dataloader
