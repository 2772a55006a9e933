# CKD (Zhu et al., 2024): w * CKD between the logits (`head.fc` outputs) of
# student and frozen teacher; no embedding heads, no memory bank. Recipes set
# the weight w (`loss_ckd.loss_weight`: 10 on ImageNet, 10 to 100 on CIFAR-100).
ckd_distiller = dict(
    type='ConfigurableDistiller',
    student_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
    teacher_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
    distill_losses=dict(loss_ckd=dict(type='CKDLoss', loss_weight=10.0, temperature=1.0)),
    loss_forward_mappings=dict(
        loss_ckd=dict(
            s_logits=dict(from_student=True, recorder='logits'),
            t_logits=dict(from_student=False, recorder='logits'),
        )
    ),
)
