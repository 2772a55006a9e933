# CKD's CIFAR-100 schedule (ZhouXinzzzzz/CKD, configs/cifar100/ckd/*.yaml): the
# CRD paper's optimiser (SGD 0.05, momentum 0.9, wd 5e-4, batch 64) for 480
# epochs with cosine decay of the learning rate to 0 instead of steps, stepped
# once per epoch as the authors' CosineAnnealingLR (T_max = 480). Their
# MobileNetV2 / ShuffleNet students use lr 0.01 and five of their pairs batch
# 32: the recipes of those pairs set it.
_base_ = ['./cifar100_crd_240e.py']

param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', by_epoch=True, begin=0, end=480, T_max=480, eta_min=0
)
train_cfg = dict(max_epochs=480)
