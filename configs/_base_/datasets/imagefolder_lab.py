# A generic image-folder dataset (mmpretrain's CustomDataset) seen in CIE Lab,
# for the colour-channel cross-modal transfer of configs/crossmodal/: the
# teacher sees the L (lightness) channel, the student the ab (colour) channels
# of the same image, as in the CRD paper's cross-modal setting (after CMC).
#
# Layout (class names are the folder names; any image format OpenCV reads):
#   data/imagefolder/
#   ├── train/<class_a>/xxx.jpg, <class_b>/yyy.png, ...
#   └── val/<class_a>/zzz.jpg, ...
# Point `data_root` at your dataset with --cfg-options
#   train_dataloader.dataset.data_root=PATH val_dataloader.dataset.data_root=PATH
# and set the recipes' `num_classes`.
#
# Pipelines: the crop and flip are drawn once per image and shared by both
# views; `TeacherView` then builds the teacher's L view, the student gets ab.
# OpenCV's uint8 Lab stores L * 255 / 100 and a + 128, b + 128; the data
# preprocessors centre L on 127.5 and ab on their neutral value 128, scaled by
# 127.5 (generic constants, not dataset statistics: put your dataset's
# per-channel mean and std there if you have them).
dataset_type = 'CustomDataset'
data_root = 'data/imagefolder'

lab_l = [dict(type='ConvertColor', conversion='BGR2Lab'), dict(type='SelectChannels', channels=[0])]
lab_ab = [
    dict(type='ConvertColor', conversion='BGR2Lab'),
    dict(type='SelectChannels', channels=[1, 2]),
]
l_preprocessor = dict(type='mmpretrain.ClsDataPreprocessor', mean=[127.5], std=[127.5])
ab_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor', mean=[128.0, 128.0], std=[127.5, 127.5]
)

train_crop = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
]
test_crop = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short'),
    dict(type='CenterCrop', crop_size=224),
]
pack_views = dict(type='PackInputs', algorithm_keys=['teacher_inputs'])

# the cross-modal distillation: student on ab, teacher's L view in each data sample
data_preprocessor = ab_preprocessor
train_pipeline = train_crop + [dict(type='TeacherView', transforms=lab_l)] + lab_ab + [pack_views]
test_pipeline = test_crop + [dict(type='TeacherView', transforms=lab_l)] + lab_ab + [pack_views]

train_dataloader = dict(
    batch_size=32,
    num_workers=5,
    dataset=dict(
        _scope_='mmpretrain',
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline,
    ),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    train_dataloader,
    dataset=dict(train_dataloader['dataset'], data_prefix='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(_scope_='mmpretrain', type='Accuracy', topk=(1,))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
