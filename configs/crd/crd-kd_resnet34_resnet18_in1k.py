# CRD+KD, ResNet-34 -> ResNet-18 on ImageNet-1k (paper's top-1/top-5:
# 71.38/90.49). The CRD config plus KD 1.0 at T=4 on the logits:
# CE 1.0 + KD 1.0 + CRD 0.8.
_base_ = ['./resnet34_resnet18_in1k.py']

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
