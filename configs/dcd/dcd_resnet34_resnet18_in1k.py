# DCD, ResNet-34 -> ResNet-18 on ImageNet-1k: the data, schedule, networks
# and teacher checkpoint of ../crd/resnet34_resnet18_in1k.py with DCD 1.0 in
# place of CRD (alpha 0, beta 1): in-batch negatives (32 per GPU), no memory
# bank, see ../_base_/distillers/dcd.py for the loss.
# As in the authors' ImageNet script (giakoumoglou/distillers, which never
# hands them to its optimiser), the logit scale's tau and bias stay fixed at
# tau = 1 (scale e), b = 0: learnable_logit_scale=False. The paper and our
# CIFAR-100 recipes train them (set it to True for the paper's form).
_base_ = ['../crd/resnet34_resnet18_in1k.py', '../_base_/distillers/dcd.py']

model = dict(
    distiller=dict(
        _base_.dcd_distiller,
        _delete_=True,
        distill_losses=dict(
            loss_dcd=dict(_base_.dcd_distiller.distill_losses.loss_dcd, learnable_logit_scale=False)
        ),
        # the 512-d embedding heads of the CRD recipe
        connectors=_base_.model.distiller.connectors,
    )
)

custom_hooks = []
