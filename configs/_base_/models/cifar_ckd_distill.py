# CKD on the CIFAR networks (Zhu et al., 2024): CE 1.0 + w * CKD between the
# logits (`head.fc` outputs) of student and frozen teacher. Each teacher
# sample must pick its own student logits among the batch's (cosine
# similarity, T = 1); there are no embedding heads, no memory bank and no
# learnable parameters. Configs using this base set, for student and teacher,
# `backbone` and `head.in_channels`, the weight w (`loss_ckd.loss_weight`:
# 10 to 100 on CIFAR-100 in the paper) and `teacher_ckpt`.
_base_ = ['./cifar_classifier.py']

default_scope = 'mmrazor'

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=_base_.model,
    teacher=_base_.model,
    teacher_ckpt=None,
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            logits=dict(type='ModuleOutputs', source='head.fc')),
        teacher_recorders=dict(
            logits=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(
            loss_ckd=dict(type='CKDLoss', loss_weight=10.0, temperature=1.0)),
        loss_forward_mappings=dict(
            loss_ckd=dict(
                s_logits=dict(from_student=True, recorder='logits'),
                t_logits=dict(from_student=False, recorder='logits')))))
