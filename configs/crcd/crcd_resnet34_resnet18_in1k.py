# CRCD, ResNet-34 -> ResNet-18 on ImageNet-1k (paper's top-1: 71.96): the
# data, schedule, networks and teacher checkpoint of
# ../crd/resnet34_resnet18_in1k.py with the losses of
# ../_base_/models/cifar_crcd_distill.py: CE 1.0 + KD 0.9 (T=4) + feature and
# gradient relations 1.0 each (K = 500, T = 0.05) on the 512-d pooled
# features. The authors describe the stop of distillation for the last 10
# epochs for CIFAR only, so it is not used here.
_base_ = ['../crd/resnet34_resnet18_in1k.py']

model = dict(
    distiller=dict(
        _delete_=True,
        type='ConfigurableDistiller',
        student_recorders=dict(
            feat=dict(type='ModuleOutputs', source='neck'),
            logits=dict(type='ModuleOutputs', source='head.fc'),
            data_samples=dict(type='ModuleInputs', source='')),
        teacher_recorders=dict(
            feat=dict(type='ModuleOutputs', source='neck'),
            logits=dict(type='ModuleOutputs', source='head.fc'),
            fc_weight=dict(type='Parameter', source='head.fc.weight')),
        distill_losses=dict(
            loss_kd=dict(type='KLDivergence', tau=4, loss_weight=0.9),
            loss_crcd=dict(
                type='CRCDLoss',
                loss_weight=1.0,
                relation='feature',
                temperature=0.05,
                num_negatives=500),
            loss_crcd_grad=dict(
                type='CRCDLoss',
                loss_weight=1.0,
                relation='gradient',
                temperature=0.05,
                num_negatives=500,
                student_channels=512,
                teacher_channels=512)),
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=512, dim_out=128)),
        loss_forward_mappings=dict(
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                preds_T=dict(from_student=False, recorder='logits')),
            loss_crcd=dict(
                s_feats=dict(
                    from_student=True, recorder='feat', connector='crd_s'),
                t_feats=dict(
                    from_student=False, recorder='feat', connector='crd_t'),
                data_samples=dict(
                    from_student=True, recorder='data_samples', data_idx=1)),
            loss_crcd_grad=dict(
                s_feats=dict(from_student=True, recorder='feat'),
                t_feats=dict(from_student=False, recorder='feat'),
                data_samples=dict(
                    from_student=True, recorder='data_samples', data_idx=1),
                s_logits=dict(from_student=True, recorder='logits'),
                t_logits=dict(from_student=False, recorder='logits'),
                t_fc_weight=dict(from_student=False,
                                 recorder='fc_weight')))))
