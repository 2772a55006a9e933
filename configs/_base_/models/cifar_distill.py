# One frozen teacher and one trained student on CIFAR-100, both
# `cifar_classifier.py` models, in mmrazor's SingleTeacherDistill: the part
# that cifar_{crd,dcd,crcd,ckd}_distill.py share. Each of those adds its
# method's distiller; recipes set the two networks (`architecture`, `teacher`:
# `backbone` and `head.in_channels`) and `teacher_ckpt`.
_base_ = ['./cifar_classifier.py']

default_scope = 'mmrazor'

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=_base_.model,
    teacher=_base_.model,
    teacher_ckpt=None,
)
