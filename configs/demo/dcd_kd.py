# DCD+KD (Giakoumoglou and Stathaki, 2024): CE 1.0 + KD (T=4) 1.0 + DCD 1.0.
# DCD contrasts each student embedding with the batch's teacher embeddings
# (same 128-d heads as CRD, no memory bank) and adds a consistency term.
_base_ = ['./kd.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_dcd=dict(type='DCDLoss', loss_weight=1.0)),
        connectors=dict(
            dcd_s=dict(type='CRDConnector', dim_in=_base_.student_feat_dim, dim_out=128),
            dcd_t=dict(type='CRDConnector', dim_in=_base_.teacher_feat_dim, dim_out=128),
        ),
        loss_forward_mappings=dict(
            loss_dcd=dict(
                s_embeds=dict(from_student=True, recorder='feat', connector='dcd_s'),
                t_embeds=dict(from_student=False, recorder='feat', connector='dcd_t'),
            )
        ),
    )
)
