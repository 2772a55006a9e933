# CKD's CIFAR-100 schedule: the CRD paper's optimiser (SGD 0.05, momentum
# 0.9, wd 5e-4, batch 64) for 480 epochs with cosine decay of the learning
# rate (to 0) instead of steps.
_base_ = ['./cifar100_crd_240e.py']

param_scheduler = dict(
    _delete_=True,
    type='CosineAnnealingLR',
    by_epoch=True,
    begin=0,
    end=480,
    T_max=480,
    eta_min=0)
train_cfg = dict(max_epochs=480)
