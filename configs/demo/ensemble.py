# Ensemble distillation (CRD paper, Tian et al. 2020, Sec. 4): the student
# (resnet8) learns from two frozen teachers of different architectures,
# resnet20 (configs/demo/teacher.py) and WRN-16-2 (configs/demo/teacher_wrn.py):
# CE 1.0 + KD (T=4) 1.0 against the teachers' averaged logits + CRD 0.8
# against each teacher (one embedding head per network, one memory-bank pair
# per teacher-student pair in CRDMemoryBankHook, 64 negatives per sample).
#
# The teachers' checkpoints are the last ones of their own runs. tools/demo.py
# (or a user) trains both teachers first, then passes their checkpoints:
#   python tools/train.py configs/demo/ensemble.py --cfg-options \
#       model.teachers.resnet20.ckpt=<teacher.py run>/epoch_15.pth \
#       model.teachers.wrn_16_2.ckpt=<teacher_wrn.py run>/epoch_15.pth
# The defaults below are those runs' checkpoints under work_dirs/demo/. Each
# teacher's network is read from the config it was trained with (cfg_path).
_base_ = ['./_base_distill.py']

# the demo's CRD loss (64 negatives) and recorders of both networks' pooled
# features and logits, from ./_base_distill.py
__crd = _base_.crd_loss
__recorders = _base_.model.distiller.teacher_recorders
__data_samples = _base_.crd_mapping.data_samples

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='MultiTeacherDistill',
    architecture=_base_.student_net,
    teachers=dict(
        resnet20=dict(
            cfg_path='{{ fileDirname }}/teacher.py', ckpt='work_dirs/demo/teacher/epoch_15.pth'
        ),
        wrn_16_2=dict(
            cfg_path='{{ fileDirname }}/teacher_wrn.py',
            ckpt='work_dirs/demo/teacher_wrn/epoch_15.pth',
        ),
    ),
    distiller=dict(
        type='MultiTeacherDistiller',
        student_recorders=_base_.model.distiller.student_recorders,
        teacher_recorders=dict(resnet20=__recorders, wrn_16_2=__recorders),
        distill_losses=dict(
            loss_kd=_base_.kd_loss,
            loss_crd_resnet20=__crd,
            loss_crd_wrn_16_2=__crd,
        ),
        connectors=dict(
            crd_s_resnet20=dict(type='CRDConnector', dim_in=_base_.student_feat_dim, dim_out=128),
            crd_s_wrn_16_2=dict(type='CRDConnector', dim_in=_base_.student_feat_dim, dim_out=128),
            crd_t_resnet20=dict(type='CRDConnector', dim_in=_base_.teacher_feat_dim, dim_out=128),
            crd_t_wrn_16_2=dict(type='CRDConnector', dim_in=128, dim_out=128),
        ),
        loss_forward_mappings=dict(
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                preds_T=dict(
                    from_student=False, teacher=['resnet20', 'wrn_16_2'], recorder='logits'
                ),
            ),
            loss_crd_resnet20=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='crd_s_resnet20'),
                t_feats=dict(
                    from_student=False,
                    teacher='resnet20',
                    recorder='feat',
                    connector='crd_t_resnet20',
                ),
                data_samples=__data_samples,
            ),
            loss_crd_wrn_16_2=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='crd_s_wrn_16_2'),
                t_feats=dict(
                    from_student=False,
                    teacher='wrn_16_2',
                    recorder='feat',
                    connector='crd_t_wrn_16_2',
                ),
                data_samples=__data_samples,
            ),
        ),
    ),
)

custom_hooks = [dict(type='CRDMemoryBankHook')]
# validation scores the student, then each teacher (teacher.<name>.accuracy/top1)
val_cfg = dict(type='mmrazor.MultiTeacherDistillValLoop')
