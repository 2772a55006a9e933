# Cross-modal transfer by CRD, resolution: mmpretrain's released ResNet-34
# (top-1 73.62) sees each ImageNet crop at full resolution, 224x224; the
# ResNet-18 student sees the same crop at 112x112 (a quarter of the pixels).
# CE 1.0 + CRD 0.8 between the pooled 512-d features, as the ImageNet CRD
# recipe (configs/crd/resnet34_resnet18_in1k.py), whose schedule and data
# layout (data/imagenet) it shares. Both views get the same normalisation.
_base_ = ['../crd/resnet34_resnet18_in1k.py']

model = dict(
    type='CrossModalDistill',
    teacher_data_preprocessor=dict(
        type='mmpretrain.ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True,
    ),
)

# crop and flip shared; the teacher keeps the 224 crop (an empty branch), the
# student's copy is resized to 112
teacher_view = dict(type='TeacherView', transforms=[])
student_view = dict(type='Resize', scale=112)
pack_views = dict(type='PackInputs', algorithm_keys=['teacher_inputs'])
train_dataloader = dict(
    dataset=dict(
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=224),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            teacher_view,
            student_view,
            pack_views,
        ]
    )
)
val_dataloader = dict(
    dataset=dict(
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='ResizeEdge', scale=256, edge='short'),
            dict(type='CenterCrop', crop_size=224),
            teacher_view,
            student_view,
            pack_views,
        ]
    )
)
test_dataloader = val_dataloader

val_cfg = dict(type='mmrazor.CrossModalDistillValLoop')
