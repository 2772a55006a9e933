# The views of the cross-modal rows (crossmodal_student.py, crossmodal.py): the
# student sees each 8x8 digit at a quarter of its pixels, 4x4 (area averages
# of 2x2 blocks); the teacher sees the same digit as the demo's teacher was
# trained, upscaled to 16x16. The random shift of training (RandomCrop 8 with
# 1-pixel padding: the 2 pixels of `_base_digits.py` at 16x16) is drawn once
# per sample, before the views split, so both show the same shifted digit.
shared_train_transforms = [dict(type='RandomCrop', crop_size=8, padding=1)]
student_view = [dict(type='Resize', scale=4, interpolation='area')]
teacher_view = dict(type='TeacherView', transforms=[dict(type='Resize', scale=16)])

# the student alone: its view only
lowres_train_pipeline = shared_train_transforms + student_view + [dict(type='PackInputs')]
lowres_test_pipeline = student_view + [dict(type='PackInputs')]
