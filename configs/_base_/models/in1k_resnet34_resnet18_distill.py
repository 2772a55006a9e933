# ResNet-34 -> ResNet-18 on ImageNet-1k in mmrazor's SingleTeacherDistill:
# mmpretrain's ResNet-18 trained from scratch, and its released ResNet-34
# (resnet34_8xb32_in1k, top-1 73.62) frozen as the teacher, fetched once into
# torch.hub's cache. The networks and checkpoint that the ImageNet recipes of
# configs/{crd,dcd,crcd,ckd}/ share; each adds its data, schedule and
# `distiller`, and sets `default_scope = 'mmrazor'` itself: the ImageNet
# schedules carry mmpretrain's runtime, whose `default_scope` a sibling base
# may not set again.
_base_ = ['mmpretrain::_base_/models/resnet18.py']

custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=_base_.model,
    teacher=dict(_base_.model, backbone=dict(_base_.model.backbone, depth=34)),
    teacher_ckpt='https://download.openmmlab.com/mmclassification/v0/resnet/'
    'resnet34_8xb32_in1k_20210831-f257d4e6.pth',
)
