# CRD (Tian et al., ICLR 2020): CRD 0.8 between the pooled penultimate features
# (`neck` outputs) of student and frozen teacher, through one trainable 128-d
# embedding head per network (CRDConnector). Recipes set the connectors' `dim_in`
# to the two feature widths. The memory banks live in CRDMemoryBankHook.
crd_distiller = dict(
    type='ConfigurableDistiller',
    student_recorders=dict(
        feat=dict(type='ModuleOutputs', source='neck'),
        data_samples=dict(type='ModuleInputs', source=''),
    ),
    teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
    distill_losses=dict(
        loss_crd=dict(
            type='CRDLoss',
            loss_weight=0.8,
            temperature=0.07,
            num_negatives=16384,
            momentum=0.5,
            feat_dim=128,
            negative_sampling='class_exact',
            positive='exact',
        )
    ),
    connectors=dict(
        crd_s=dict(type='CRDConnector', dim_in=None, dim_out=128),
        crd_t=dict(type='CRDConnector', dim_in=None, dim_out=128),
    ),
    loss_forward_mappings=dict(
        loss_crd=dict(
            s_feats=dict(from_student=True, recorder='feat', connector='crd_s'),
            t_feats=dict(from_student=False, recorder='feat', connector='crd_t'),
            data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
        )
    ),
)

custom_hooks = [dict(type='CRDMemoryBankHook')]
