# CRCD, ResNet-34 -> ResNet-18 on ImageNet-1k (paper's top-1: 71.96): the
# data, schedule, networks and teacher checkpoint of
# ../crd/resnet34_resnet18_in1k.py with the losses of
# ../_base_/distillers/crcd.py: CE 1.0 + KD 0.9 (T=4) + feature and
# gradient relations 1.0 each (K = 500, T = 0.05) on the 512-d pooled
# features. The authors describe the stop of distillation for the last 10
# epochs for CIFAR only, so it is not used here.
_base_ = ['../crd/resnet34_resnet18_in1k.py', '../_base_/distillers/crcd.py']

model = dict(
    distiller=dict(
        _base_.crcd_distiller,
        _delete_=True,
        distill_losses=dict(
            _base_.crcd_distiller.distill_losses,
            loss_crcd_grad=dict(_base_.crcd_distiller.distill_losses.loss_crcd_grad,
                                student_channels=512, teacher_channels=512)),
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=512, dim_out=128))))
