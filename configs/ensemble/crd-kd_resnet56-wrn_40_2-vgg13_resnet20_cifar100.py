# Ensemble distillation on CIFAR-100 (CRD paper, Tian et al. 2020): three of
# the paper's CIFAR-100 teachers of different architectures, resnet56 (72.34),
# WRN-40-2 (75.61) and VGG13 (74.64), frozen, into one resnet20 student.
# CE 1.0 + KD 1.0 (T=4) against the teachers' averaged logits + CRD 0.8
# against each teacher (the paper's CRD settings, ../_base_/distillers/crd.py:
# T=0.07, 16384 negatives from other classes, momentum 0.5, 128-d embeddings),
# i.e. one contrastive objective, embedding-head pair and memory-bank pair per
# teacher-student pair. The paper's CIFAR-100 schedule (240 epochs).
#
# Each teacher's network is read from the config it was trained with
# (configs/cifar100_teachers/) and loaded from that run's last checkpoint in
# tools/train.py's default work_dir (relative to the repository root); other
# checkpoints: --cfg-options model.teachers.<name>.ckpt=<path>.
_base_ = [
    '../_base_/models/cifar_classifier.py',
    '../_base_/datasets/cifar100_crd.py',
    '../_base_/schedules/cifar100_crd_240e.py',
    '../_base_/distillers/crd.py',
]

default_scope = 'mmrazor'

# teacher name (its config is ../cifar100_teachers/<name>_cifar100.py) ->
# the width of its pooled feature
__teacher_widths = dict(resnet56=64, wrn_40_2=128, vgg13=512)
__student_width = 64
__recorders = dict(
    feat=dict(type='ModuleOutputs', source='neck'),
    logits=dict(type='ModuleOutputs', source='head.fc'),
)
__crd = _base_.crd_distiller.distill_losses.loss_crd

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='MultiTeacherDistill',
    architecture=dict(
        _base_.model,
        backbone=dict(type='CifarResNet', arch='resnet20'),
        head=dict(_base_.model.head, in_channels=__student_width),
    ),
    teachers={
        name: dict(
            cfg_path='{{ fileDirname }}/../cifar100_teachers/' + name + '_cifar100.py',
            ckpt='work_dirs/' + name + '_cifar100/epoch_240.pth',
        )
        for name in __teacher_widths
    },
    distiller=dict(
        type='MultiTeacherDistiller',
        student_recorders=dict(__recorders, data_samples=dict(type='ModuleInputs', source='')),
        teacher_recorders={name: __recorders for name in __teacher_widths},
        distill_losses=dict(
            loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0),
            **{'loss_crd_' + name: __crd for name in __teacher_widths},
        ),
        connectors=dict(
            **{
                'crd_s_' + name: dict(type='CRDConnector', dim_in=__student_width, dim_out=128)
                for name in __teacher_widths
            },
            **{
                'crd_t_' + name: dict(type='CRDConnector', dim_in=width, dim_out=128)
                for name, width in __teacher_widths.items()
            },
        ),
        loss_forward_mappings=dict(
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                # a list of teachers: the mean of their logits
                preds_T=dict(from_student=False, teacher=list(__teacher_widths), recorder='logits'),
            ),
            **{
                'loss_crd_' + name: dict(
                    s_feats=dict(from_student=True, recorder='feat', connector='crd_s_' + name),
                    t_feats=dict(
                        from_student=False, teacher=name, recorder='feat', connector='crd_t_' + name
                    ),
                    data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
                )
                for name in __teacher_widths
            },
        ),
    ),
)
