# CRD+KD (Tian et al., ICLR 2020): CE 1.0 + KD (T=4) 1.0 + CRD 0.8 on the
# pooled features through one 128-d embedding head per network. The memory
# banks (one row per training image, owned by CRDMemoryBankHook) give each
# sample 1,024 negatives drawn from the other classes' images.
_base_ = ['./kd.py']

model = dict(
    distiller=dict(
        distill_losses=dict(
            loss_crd=dict(
                type='CRDLoss',
                loss_weight=0.8,
                temperature=0.07,
                num_negatives=1024,
                momentum=0.5,
                feat_dim=128,
                negative_sampling='class_exact',
                positive='exact')),
        connectors=dict(
            crd_s=dict(
                type='CRDConnector',
                dim_in=_base_.student_feat_dim,
                dim_out=128),
            crd_t=dict(
                type='CRDConnector',
                dim_in=_base_.teacher_feat_dim,
                dim_out=128)),
        loss_forward_mappings=dict(
            loss_crd=dict(
                s_feats=dict(
                    from_student=True, recorder='feat', connector='crd_s'),
                t_feats=dict(
                    from_student=False, recorder='feat', connector='crd_t'),
                data_samples=dict(
                    from_student=True, recorder='data_samples',
                    data_idx=1)))))

custom_hooks = [dict(type='CRDMemoryBankHook')]
