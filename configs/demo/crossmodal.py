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
        distill_losses=dict(loss_crd=_base_.crd_loss),
        connectors=_base_.crd_connectors,
        loss_forward_mappings=dict(loss_crd=_base_.crd_mapping),
    ),
)

pack = dict(type='PackInputs', algorithm_keys=['teacher_inputs'])
train_dataloader = dict(
    dataset=dict(
        pipeline=_base_.shared_train_transforms
        + [_base_.teacher_view]
        + _base_.student_view
        + [pack]
    )
)
val_dataloader = dict(dataset=dict(pipeline=[_base_.teacher_view] + _base_.student_view + [pack]))
test_dataloader = val_dataloader

val_cfg = dict(type='mmrazor.CrossModalDistillValLoop')
custom_hooks = [dict(type='CRDMemoryBankHook')]
