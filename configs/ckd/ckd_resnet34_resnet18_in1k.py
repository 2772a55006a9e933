# CKD, ResNet-34 -> ResNet-18 on ImageNet-1k: the data, schedule, networks
# and teacher checkpoint of ../crd/resnet34_resnet18_in1k.py with CE 1.0 +
# 10 * CKD on the logits (w = 10, the paper's ImageNet weight) in place of
# CRD; no embedding heads and no memory bank.
_base_ = ['../crd/resnet34_resnet18_in1k.py']

model = dict(
    distiller=dict(
        _delete_=True,
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

custom_hooks = []
