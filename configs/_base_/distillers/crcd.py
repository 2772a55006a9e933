# CRCD (Zhu et al., CVPR 2021): KD 0.9 (T=4) + the feature relation 1.0 + the
# gradient relation 1.0. The feature relation contrasts anchor-relative relations
# of the 128-d embeddings (CRDConnector heads on the pooled `neck` features); the
# gradient relation (the complementary element) does the same with the gradients
# of the task loss w.r.t. those features, embedded by heads inside the loss,
# which needs the teacher classifier's weight (`fc_weight`). K = 500 negatives
# from other classes, T = 0.05; each relation has its own memory banks in
# CRDMemoryBankHook. Recipes set the connectors' `dim_in` and the gradient
# relation's `student_channels`/`teacher_channels` to the two feature widths.
crcd_distiller = dict(
    type='ConfigurableDistiller',
    student_recorders=dict(
        feat=dict(type='ModuleOutputs', source='neck'),
        logits=dict(type='ModuleOutputs', source='head.fc'),
        data_samples=dict(type='ModuleInputs', source=''),
    ),
    teacher_recorders=dict(
        feat=dict(type='ModuleOutputs', source='neck'),
        logits=dict(type='ModuleOutputs', source='head.fc'),
        fc_weight=dict(type='Parameter', source='head.fc.weight'),
    ),
    distill_losses=dict(
        loss_kd=dict(type='KLDivergence', tau=4, loss_weight=0.9),
        loss_crcd=dict(
            type='CRCDLoss',
            loss_weight=1.0,
            relation='feature',
            temperature=0.05,
            num_negatives=500,
            momentum=0.5,
            feat_dim=128,
        ),
        loss_crcd_grad=dict(
            type='CRCDLoss',
            loss_weight=1.0,
            relation='gradient',
            temperature=0.05,
            num_negatives=500,
            momentum=0.5,
            feat_dim=128,
            student_channels=None,
            teacher_channels=None,
        ),
    ),
    connectors=dict(
        crd_s=dict(type='CRDConnector', dim_in=None, dim_out=128),
        crd_t=dict(type='CRDConnector', dim_in=None, dim_out=128),
    ),
    loss_forward_mappings=dict(
        loss_kd=dict(
            preds_S=dict(from_student=True, recorder='logits'),
            preds_T=dict(from_student=False, recorder='logits'),
        ),
        loss_crcd=dict(
            s_feats=dict(from_student=True, recorder='feat', connector='crd_s'),
            t_feats=dict(from_student=False, recorder='feat', connector='crd_t'),
            data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
        ),
        loss_crcd_grad=dict(
            s_feats=dict(from_student=True, recorder='feat'),
            t_feats=dict(from_student=False, recorder='feat'),
            data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
            s_logits=dict(from_student=True, recorder='logits'),
            t_logits=dict(from_student=False, recorder='logits'),
            t_fc_weight=dict(from_student=False, recorder='fc_weight'),
        ),
    ),
)
