# The demo's second teacher, of another architecture than teacher.py's
# resnet20: the CRD paper's WRN-16-2 (CifarWideResNet, pooled feature width
# 128) trained alone with cross-entropy, on the teacher's 15-epoch schedule, all 1,433 images.
# With teacher.py it is one of the two teachers of ensemble.py.
_base_ = ['./teacher.py']

model = dict(
    backbone=dict(_delete_=True, type='CifarWideResNet', arch='wrn_16_2'),
    head=dict(in_channels=128),
)
