# Cross-modal transfer (CRD, Tian et al. 2020): the demo's teacher (resnet20,
# trained on the 16x16 digits) sees each digit at 16x16, the student (resnet8)
# sees it at 4x4 (`_lowres_view.py`); CE 1.0 + CRD 0.8 between their pooled
# features, as the paper's cross-modal setting (no KD). `TeacherView` builds
# the teacher's view in the pipeline and `PackInputs` carries it in each data
# sample; `CrossModalDistill` feeds it to the teacher through its own data
# preprocessor (the same normalisation here), and `CrossModalDistillValLoop`
# scores the teacher on it. Compare with crossmodal_student.py (the student
# alone on the 4x4 view).
_base_ = ['./_base_distill.py', './_lowres_view.py']

model = dict(
    type='CrossModalDistill',
    teacher_data_preprocessor=_base_.data_preprocessor,
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
            crd_s=dict(type='CRDConnector', dim_in=_base_.student_feat_dim, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=_base_.teacher_feat_dim, dim_out=128)),
        loss_forward_mappings=dict(
            loss_crd=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='crd_s'),
                t_feats=dict(from_student=False, recorder='feat', connector='crd_t'),
                data_samples=dict(from_student=True, recorder='data_samples', data_idx=1)))))

pack = dict(type='PackInputs', algorithm_keys=['teacher_inputs'])
train_dataloader = dict(dataset=dict(
    pipeline=_base_.shared_train_transforms + [_base_.teacher_view] + _base_.student_view + [pack]))
val_dataloader = dict(dataset=dict(pipeline=[_base_.teacher_view] + _base_.student_view + [pack]))
test_dataloader = val_dataloader

val_cfg = dict(type='mmrazor.CrossModalDistillValLoop')
custom_hooks = [dict(type='CRDMemoryBankHook')]
