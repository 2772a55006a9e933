# The CRD paper's CIFAR-100 schedule (teachers, students and distillation
# alike): SGD, momentum 0.9, weight decay 5e-4, lr 0.05 for batch 64 (the
# authors use 0.01 for MobileNetV2 / ShuffleNet students: override it there),
# 240 epochs, lr x0.1 at epochs 150, 180 and 210; the last epoch's accuracy
# is the reported one.
# It also carries the run-time settings that go with this schedule, written
# here without `default_scope` so that classifier bases ('mmpretrain') and
# distillation bases ('mmrazor') can both combine with it: a checkpoint every
# 10 epochs, so `epoch_240.pth` (what distillation configs load as teacher)
# is the final one.
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[150, 180, 210], gamma=0.1)

train_cfg = dict(by_epoch=True, max_epochs=240, val_interval=5)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # a NaN/inf loss stops the run at that iteration, naming the terms
    stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
