# The CRD recipe base (./cifar100_crd.py) for MobileNetV2 and ShuffleNet
# students, which the CRD, DCD and CKD authors train with lr 0.01 (all other
# students with 0.05).
_base_ = './cifar100_crd.py'

optim_wrapper = dict(optimizer=dict(lr=0.01))
