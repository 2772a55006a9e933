# KD (Hinton et al., 2015) at T=4 with weight 1.0 on the logits (`head.fc`
# outputs) of student and frozen teacher: the "+KD" of the CRD+KD and DCD+KD
# recipes (alpha 1). Merge it into a distiller that has the other losses:
#   _base_ = ['./crd_<teacher>_<student>_cifar100.py', '.../distillers/kd.py']
#   model = dict(distiller=_base_.kd_distiller)
kd_distiller = dict(
    student_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
    teacher_recorders=dict(logits=dict(type='ModuleOutputs', source='head.fc')),
    distill_losses=dict(loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0)),
    loss_forward_mappings=dict(
        loss_kd=dict(
            preds_S=dict(from_student=True, recorder='logits'),
            preds_T=dict(from_student=False, recorder='logits'),
        )
    ),
)
