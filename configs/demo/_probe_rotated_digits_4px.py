# The linear-probe task of `_probe_rotated_digits.py` for the students that
# see 4x4 digits (crossmodal_student.py, crossmodal.py): the rotated digits at
# their 4x4 view.
_base_ = ['./_probe_rotated_digits.py', './_lowres_view.py']

probe_pipeline = [_base_.rotate] + _base_.student_view + [dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=probe_pipeline))
test_dataloader = dict(dataset=dict(pipeline=probe_pipeline))
