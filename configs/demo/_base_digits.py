# Shared by every demo config: scikit-learn's digits (crd_mm's `SklearnDigits`,
# 1,433 training / 364 test images, read from the installed package) upscaled
# from 8x8 to 16x16, the two networks of the demo (teacher CifarResNet
# resnet20, student resnet8: 3.5x fewer parameters) and a short CPU schedule.
# Each config picks its network(s) from `teacher_net` / `student_net`.
#
# The students' regime: they learn from a small labelled fraction, the first
# 10 training images of each class (100 of the 1,433), for 100 epochs (200
# iterations), while teacher.py trains the teacher on all 1,433 for 15
# epochs. Trained alone on so few images the student stays far below its
# teacher, which leaves distillation something to transfer.
custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

student_samples_per_class = 10
max_epochs = 100


def _classifier(arch, width):
    return dict(
        _scope_='mmpretrain',
        type='ImageClassifier',
        backbone=dict(type='CifarResNet', arch=arch),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=10,
            in_channels=width,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        ),
    )


teacher_net = _classifier('resnet20', 64)
student_net = _classifier('resnet8', 64)
# the pooled (neck) feature widths, for the CRD/DCD embedding heads
teacher_feat_dim = 64
student_feat_dim = 64

# mean/std of the 0..255 digit pixels over the whole set
data_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor',
    num_classes=10,
    mean=[77.85] * 3,
    std=[95.85] * 3,
    to_rgb=False,
)

# no flips: a mirrored digit is another glyph
train_pipeline = [
    dict(type='Resize', scale=16),
    dict(type='RandomCrop', crop_size=16, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='Resize', scale=16), dict(type='PackInputs')]

# the data lives in memory: worker processes would only cost start-up time
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        _scope_='mmpretrain',
        type='SklearnDigits',
        split='train',
        samples_per_class=student_samples_per_class,
        pipeline=train_pipeline,
    ),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(_scope_='mmpretrain', type='SklearnDigits', split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(_scope_='mmpretrain', type='Accuracy', topk=(1,))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# The CRD paper's optimiser (SGD 0.05, momentum 0.9, wd 5e-4, batch 64) with
# cosine decay, which suits a short schedule; the last epoch is reported.
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs, eta_min=0.0)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=2),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # only the final checkpoint, epoch_{max_epochs}.pth
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # a NaN/inf loss stops the run at that iteration, naming the terms
    stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'),
)

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
