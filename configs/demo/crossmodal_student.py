# The cross-modal row's baseline: the student (resnet8) trained alone on its
# low-resolution view of the digits (4x4, see `_lowres_view.py`), with the
# schedule of every student row.
_base_ = ['./student.py', './_lowres_view.py']

train_dataloader = dict(dataset=dict(pipeline=_base_.lowres_train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=_base_.lowres_test_pipeline))
test_dataloader = val_dataloader
