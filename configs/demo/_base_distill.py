# The distillation skeleton shared by the demo's distillation configs: the
# student (resnet8, trained) learns from the frozen teacher (resnet20) loaded
# from the teacher run's last checkpoint. Recorders capture both networks'
# pooled features (`neck`) and logits (`head.fc`) and the student's data
# samples (for CRD's dataset indices and labels); each config adds its losses
# and their `loss_forward_mappings`. Validation scores the student, then the
# teacher (logged as `teacher.accuracy/top1`). The KD and CRD pieces below are
# shared by the configs that combine them.
_base_ = ['./_base_digits.py']

default_scope = 'mmrazor'

model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=_base_.student_net,
    teacher=_base_.teacher_net,
    # written by `tools/train.py configs/demo/teacher.py --work-dir
    # work_dirs/demo/teacher`; tools/demo.py passes its own run's checkpoint
    teacher_ckpt='work_dirs/demo/teacher/epoch_15.pth',
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            feat=dict(type='ModuleOutputs', source='neck'),
            logits=dict(type='ModuleOutputs', source='head.fc'),
            data_samples=dict(type='ModuleInputs', source=''),
        ),
        teacher_recorders=dict(
            feat=dict(type='ModuleOutputs', source='neck'),
            logits=dict(type='ModuleOutputs', source='head.fc'),
        ),
        distill_losses=dict(),
        connectors=dict(),
        loss_forward_mappings=dict(),
    ),
)

val_cfg = dict(type='mmrazor.SingleTeacherDistillValLoop')

# KD (Hinton et al.): KL divergence of the T=4 softened logits.
kd_loss = dict(type='KLDivergence', tau=4, loss_weight=1.0)
kd_mapping = dict(
    preds_S=dict(from_student=True, recorder='logits'),
    preds_T=dict(from_student=False, recorder='logits'),
)

# CRD (Tian et al., ICLR 2020) with weight 0.8 on the pooled features through
# one 128-d embedding head per network. The memory banks (one row per
# training image, owned by CRDMemoryBankHook) give each sample 64 negatives
# drawn from the other classes' 90 training images.
crd_loss = dict(
    type='CRDLoss',
    loss_weight=0.8,
    temperature=0.07,
    num_negatives=64,
    momentum=0.5,
    feat_dim=128,
    negative_sampling='class_exact',
    positive='exact',
)
crd_connectors = dict(
    crd_s=dict(type='CRDConnector', dim_in=_base_.student_feat_dim, dim_out=128),
    crd_t=dict(type='CRDConnector', dim_in=_base_.teacher_feat_dim, dim_out=128),
)
crd_mapping = dict(
    s_feats=dict(from_student=True, recorder='feat', connector='crd_s'),
    t_feats=dict(from_student=False, recorder='feat', connector='crd_t'),
    data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
)
