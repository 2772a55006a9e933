# Shared by the segmentation demo configs: crd_mm's bundled SyntheticShapes set (coloured
# circles, squares and triangles on textured backgrounds, 64x64, generated from a seed into
# data/synthetic_shapes on first use: 256 training and 64 validation images, 4 classes), the
# two networks (mmseg EncoderDecoder + PSPHead on dilated ResNetV1c-18 backbones at stride 8:
# the teacher 16 base channels, 0.78M parameters; the student 8, 0.20M) and a short CPU
# schedule (300 iterations of 8 images).
custom_imports = dict(
    imports=['crd_mm', 'crd_mm.datasets.synthetic_shapes'], allow_failed_imports=False
)

num_classes = 4
image_size = 64
max_iters = 300

data_preprocessor = dict(
    type='mmseg.SegDataPreProcessor',
    mean=[127.5, 127.5, 127.5],
    std=[64.0, 64.0, 64.0],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(image_size, image_size),
)


def _segmentor(width, head_channels):
    return dict(
        _scope_='mmseg',
        type='EncoderDecoder',
        data_preprocessor=data_preprocessor,
        backbone=dict(
            type='ResNetV1c',
            depth=18,
            stem_channels=width,
            base_channels=width,
            num_stages=4,
            out_indices=(3,),
            strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4),
            norm_cfg=dict(type='BN', requires_grad=True),
            contract_dilation=True,
        ),
        decode_head=dict(
            type='PSPHead',
            in_channels=width * 8,
            in_index=0,
            channels=head_channels,
            pool_scales=(1, 2, 4),
            dropout_ratio=0.1,
            num_classes=num_classes,
            norm_cfg=dict(type='BN', requires_grad=True),
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        ),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'),
    )


teacher_net = _segmentor(16, 32)
student_net = _segmentor(8, 16)
# the width of decode_head.bottleneck's output (the features before the classifier)
teacher_feat_dim = 32
student_feat_dim = 16

# explicit scopes: the distillation configs' default scope is mmrazor (mmcv's transforms
# resolve from any scope; LoadAnnotations must be mmseg's, not mmcv's)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmseg.LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='mmseg.PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmseg.LoadAnnotations'),
    dict(type='mmseg.PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=dict(type='mmseg.SyntheticShapes', split='train', pipeline=train_pipeline),
    sampler=dict(type='InfiniteSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    dataset=dict(type='mmseg.SyntheticShapes', split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='mmseg.IoUMetric', iou_metrics=['mIoU'])
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type='PolyLR', eta_min=1e-4, power=0.9, by_epoch=False, end=max_iters)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=-1, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'),
)
log_processor = dict(by_epoch=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'),
)
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
