# The common ImageNet ResNet-34 -> ResNet-18 distillation schedule, which is
# mmpretrain's ResNet schedule: SGD lr 0.1 (batch 8 GPUs x 32 = 256), momentum
# 0.9, weight decay 1e-4, 100 epochs, lr x0.1 at epochs 30, 60 and 90, with
# mmpretrain's default runtime. Checkpoints are kept to the last 3: with a
# memory bank each one carries 2 x 1.28M x 128 floats (about 1.3 GB).
_base_ = [
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]

default_hooks = dict(
    checkpoint=dict(max_keep_ckpts=3),
    # a NaN/inf loss stops the run at that iteration, naming the terms
    stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'),
)
