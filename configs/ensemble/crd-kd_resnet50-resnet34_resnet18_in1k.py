# Ensemble distillation on ImageNet-1k: mmpretrain's released ResNet-50 (top-1
# 76.55) and ResNet-34 (73.62), frozen, into a ResNet-18 trained from scratch.
# CE 1.0 + KD 1.0 (T=4) against the two teachers' averaged logits + CRD 0.8
# against each teacher (the paper's ImageNet CRD settings from
# ../_base_/distillers/crd.py: T=0.07, 16384 negatives from other classes,
# momentum 0.5, 128-d embedding heads on the pooled features; one pair of
# 1.28M x 128 memory banks per teacher in CRDMemoryBankHook). mmpretrain's
# ResNet schedule: 8 GPUs x 32 images, SGD lr 0.1, wd 1e-4, 100 epochs.
# Each teacher is built from its mmpretrain config and loaded from the
# checkpoint that config's metafile lists (fetched once into torch.hub's cache).
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    '../_base_/datasets/imagenet_bs32_crd.py',
    '../_base_/schedules/imagenet_bs256_100e.py',
    '../_base_/distillers/crd.py',
]

default_scope = 'mmrazor'
custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

__recorders = dict(
    feat=dict(type='ModuleOutputs', source='neck'),
    logits=dict(type='ModuleOutputs', source='head.fc'),
)
__crd = _base_.crd_distiller.distill_losses.loss_crd
__data_samples = dict(from_student=True, recorder='data_samples', data_idx=1)
__zoo = 'https://download.openmmlab.com/mmclassification/v0/resnet/'

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='MultiTeacherDistill',
    architecture=_base_.model,
    teachers=dict(
        resnet50=dict(
            cfg_path='mmpretrain::resnet/resnet50_8xb32_in1k.py',
            ckpt=__zoo + 'resnet50_8xb32_in1k_20210831-ea4938fc.pth',
        ),
        resnet34=dict(
            cfg_path='mmpretrain::resnet/resnet34_8xb32_in1k.py',
            ckpt=__zoo + 'resnet34_8xb32_in1k_20210831-f257d4e6.pth',
        ),
    ),
    distiller=dict(
        type='MultiTeacherDistiller',
        student_recorders=dict(__recorders, data_samples=dict(type='ModuleInputs', source='')),
        teacher_recorders=dict(resnet50=__recorders, resnet34=__recorders),
        distill_losses=dict(
            loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0),
            loss_crd_resnet50=__crd,
            loss_crd_resnet34=__crd,
        ),
        connectors=dict(
            crd_s_resnet50=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_s_resnet34=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_t_resnet50=dict(type='CRDConnector', dim_in=2048, dim_out=128),
            crd_t_resnet34=dict(type='CRDConnector', dim_in=512, dim_out=128),
        ),
        loss_forward_mappings=dict(
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                # a list of teachers: the mean of their logits
                preds_T=dict(
                    from_student=False, teacher=['resnet50', 'resnet34'], recorder='logits'
                ),
            ),
            loss_crd_resnet50=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='crd_s_resnet50'),
                t_feats=dict(
                    from_student=False,
                    teacher='resnet50',
                    recorder='feat',
                    connector='crd_t_resnet50',
                ),
                data_samples=__data_samples,
            ),
            loss_crd_resnet34=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='crd_s_resnet34'),
                t_feats=dict(
                    from_student=False,
                    teacher='resnet34',
                    recorder='feat',
                    connector='crd_t_resnet34',
                ),
                data_samples=__data_samples,
            ),
        ),
    ),
)
