# DCD+KD, resnet32x4 -> resnet8x4 on CIFAR-100 (paper's top-1: 75.09).
# The DCD config plus KD 1.0 at T=4 on the logits: CE 1.0 + KD 1.0 + DCD 1.0
# (alpha 1, beta 1).
_base_ = ['./dcd_resnet32x4_resnet8x4_cifar100.py']

model = dict(
    distiller=dict(
        student_recorders=dict(
            logits=dict(type='ModuleOutputs', source='head.fc')),
        teacher_recorders=dict(
            logits=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(
            loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0)),
        loss_forward_mappings=dict(
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                preds_T=dict(from_student=False, recorder='logits')))))
