# DCD (Giakoumoglou and Stathaki, 2024): DCD 1.0 between the 128-d embeddings
# (CRDConnector heads on the pooled `neck` features) of student and frozen
# teacher; the other samples of the batch are the negatives (no memory bank), and
# the loss's learnable temperature and bias train with the student. Recipes set
# the connectors' `dim_in` to the two feature widths.
dcd_distiller = dict(
    type='ConfigurableDistiller',
    student_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
    teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
    distill_losses=dict(
        loss_dcd=dict(
            type='DCDLoss',
            loss_weight=1.0,
            init_temperature=1.0,
            init_bias=0.0,
            consistency_weight=0.5,
        )
    ),
    connectors=dict(
        crd_s=dict(type='CRDConnector', dim_in=None, dim_out=128),
        crd_t=dict(type='CRDConnector', dim_in=None, dim_out=128),
    ),
    loss_forward_mappings=dict(
        loss_dcd=dict(
            s_embeds=dict(from_student=True, recorder='feat', connector='crd_s'),
            t_embeds=dict(from_student=False, recorder='feat', connector='crd_t'),
        )
    ),
)
