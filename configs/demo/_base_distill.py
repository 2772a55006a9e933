# The distillation skeleton shared by the demo's distillation configs: the
# student (resnet8, trained) learns from the frozen teacher (resnet20) loaded
# from the teacher run's last checkpoint. Recorders capture both networks'
# pooled features (`neck`) and logits (`head.fc`) and the student's data
# samples (for CRD's dataset indices and labels); each config adds its losses
# and their `loss_forward_mappings`. Validation scores the student, then the
# teacher (logged as `teacher.accuracy/top1`).
_base_ = ['./_base_digits.py']

default_scope = 'mmrazor'

model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=_base_.student_net,
    teacher=_base_.teacher_net,
    # written by `tools/train.py configs/demo/teacher.py --work-dir
    # work_dirs/demo/teacher`; tools/demo.py passes its own run's checkpoint
    teacher_ckpt='work_dirs/demo/teacher/epoch_30.pth',
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            feat=dict(type='ModuleOutputs', source='neck'),
            logits=dict(type='ModuleOutputs', source='head.fc'),
            data_samples=dict(type='ModuleInputs', source='')),
        teacher_recorders=dict(
            feat=dict(type='ModuleOutputs', source='neck'),
            logits=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(),
        connectors=dict(),
        loss_forward_mappings=dict()))

val_cfg = dict(type='mmrazor.SingleTeacherDistillValLoop')
