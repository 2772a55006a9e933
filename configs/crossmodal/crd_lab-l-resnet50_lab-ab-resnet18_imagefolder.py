# Cross-modal transfer by CRD (Tian et al., ICLR 2020), colour channels: a
# ResNet-50 teacher that sees the L channel of CIE Lab images (trained by
# resnet50_lab-l_imagefolder.py) distils into a ResNet-18 student that sees
# the ab channels of the same images. CE 1.0 + CRD 0.8 between the pooled
# features (2048-d and 512-d, each through a 128-d embedding head), 16384
# negatives per sample, memory banks in CRDMemoryBankHook; mmpretrain's
# ImageNet schedule. Data: an image folder (configs/_base_/datasets/imagefolder_lab.py
# gives the layout). For unlabelled pairs, set calculate_student_loss=False and
# negative_sampling='uniform', and judge the student with
# tools/analysis/linear_probe.py.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    '../_base_/datasets/imagefolder_lab.py',
    '../_base_/schedules/imagenet_bs256_100e.py',
    '../_base_/distillers/crd.py',
]

default_scope = 'mmrazor'
custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

num_classes = 1000  # the number of class folders of your dataset

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='CrossModalDistill',
    architecture=dict(
        _base_.model,
        backbone=dict(_base_.model.backbone, in_channels=2),  # ab
        head=dict(_base_.model.head, num_classes=num_classes),
    ),
    teacher=dict(
        _base_.model,
        backbone=dict(_base_.model.backbone, depth=50, in_channels=1),  # L
        head=dict(_base_.model.head, num_classes=num_classes, in_channels=2048),
    ),
    teacher_ckpt='work_dirs/crossmodal/resnet50_lab-l_imagefolder/epoch_100.pth',
    # the student's view (ab) is prepared by `data_preprocessor`, the teacher's (L) by this
    teacher_data_preprocessor=_base_.l_preprocessor,
    distiller=dict(
        _base_.crd_distiller,
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=2048, dim_out=128),
        ),
    ),
)

# validation scores the student on ab, then the teacher on L
val_cfg = dict(type='mmrazor.CrossModalDistillValLoop')
