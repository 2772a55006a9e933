# CRCD+KD (Zhu et al., CVPR 2021): CE 1.0 + KD (T=4) 0.9 + CRCD's feature
# relation 1.0 and gradient relation 1.0. Anchor-relative relations of the
# 128-d embeddings (feature) and of the task-loss gradients w.r.t. the pooled
# features (gradient, student by double backpropagation) are contrasted with
# 64 negatives from other classes each; both relations keep their own memory
# banks in CRDMemoryBankHook.
_base_ = ['./kd.py']

__relation = dict(
    type='CRCDLoss', loss_weight=1.0, temperature=0.05, num_negatives=64, momentum=0.5, feat_dim=128
)
__data_samples = dict(from_student=True, recorder='data_samples', data_idx=1)

model = dict(
    distiller=dict(
        teacher_recorders=dict(fc_weight=dict(type='Parameter', source='head.fc.weight')),
        distill_losses=dict(
            loss_kd=dict(loss_weight=0.9),
            loss_crcd=dict(__relation, relation='feature'),
            loss_crcd_grad=dict(
                __relation,
                relation='gradient',
                student_channels=_base_.student_feat_dim,
                teacher_channels=_base_.teacher_feat_dim,
            ),
        ),
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=_base_.student_feat_dim, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=_base_.teacher_feat_dim, dim_out=128),
        ),
        loss_forward_mappings=dict(
            loss_crcd=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='crd_s'),
                t_feats=dict(from_student=False, recorder='feat', connector='crd_t'),
                data_samples=__data_samples,
            ),
            loss_crcd_grad=dict(
                s_feats=dict(from_student=True, recorder='feat'),
                t_feats=dict(from_student=False, recorder='feat'),
                data_samples=__data_samples,
                s_logits=dict(from_student=True, recorder='logits'),
                t_logits=dict(from_student=False, recorder='logits'),
                t_fc_weight=dict(from_student=False, recorder='fc_weight'),
            ),
        ),
    )
)

custom_hooks = [dict(type='CRDMemoryBankHook')]
