# DCD, ResNet-34 -> ResNet-18 on ImageNet-1k: the data, schedule, networks
# and teacher checkpoint of ../crd/resnet34_resnet18_in1k.py with DCD 1.0 in
# place of CRD (alpha 0, beta 1): in-batch negatives (32 per GPU), no memory
# bank, see ../_base_/models/cifar_dcd_distill.py for the loss.
_base_ = ['../crd/resnet34_resnet18_in1k.py']

model = dict(
    distiller=dict(
        _delete_=True,
        type='ConfigurableDistiller',
        student_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        distill_losses=dict(loss_dcd=dict(type='DCDLoss', loss_weight=1.0)),
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=512, dim_out=128)),
        loss_forward_mappings=dict(
            loss_dcd=dict(
                s_embeds=dict(
                    from_student=True, recorder='feat', connector='crd_s'),
                t_embeds=dict(
                    from_student=False, recorder='feat',
                    connector='crd_t')))))

custom_hooks = []
