# CRD, ResNet-34 -> ResNet-18 on ImageNet-1k (paper's top-1/top-5:
# 71.17/90.13; teacher 73.31, student 69.75). 8 GPUs x 32 images, SGD lr 0.1,
# wd 1e-4, 100 epochs with steps at 30/60/90; CE 1.0 + CRD 0.8 between the
# pooled 512-d features (`neck` outputs) of mmpretrain's ResNet-18 (trained
# from scratch) and its released ResNet-34 (frozen, top-1 73.62), each through
# a trainable 128-d embedding head. 16384 negatives per sample from other
# classes, drawn with replacement as in the authors' ImageNet code; the two
# 1.28M x 128 memory banks live in CRDMemoryBankHook, outside the model.
_base_ = [
    '../_base_/models/in1k_resnet34_resnet18_distill.py',
    '../_base_/datasets/imagenet_bs32_crd.py',
    '../_base_/schedules/imagenet_bs256_100e.py',
    '../_base_/distillers/crd.py',
]

default_scope = 'mmrazor'

model = dict(
    distiller=dict(
        _base_.crd_distiller,
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=512, dim_out=128),
        ),
    ),
)
