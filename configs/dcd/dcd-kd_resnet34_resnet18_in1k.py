# DCD+KD, ResNet-34 -> ResNet-18 on ImageNet-1k: the DCD config plus KD 1.0
# at T=4 on the logits (alpha 1, beta 1); tau and b fixed as there
# (learnable_logit_scale=False, the authors' ImageNet script).
_base_ = ['./dcd_resnet34_resnet18_in1k.py']

model = dict(
    distiller=dict(
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
)
