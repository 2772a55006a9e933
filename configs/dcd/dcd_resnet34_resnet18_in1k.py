# DCD, ResNet-34 -> ResNet-18 on ImageNet-1k: the data, schedule, networks
# and teacher checkpoint of ../crd/resnet34_resnet18_in1k.py with DCD 1.0 in
# place of CRD (alpha 0, beta 1): in-batch negatives (32 per GPU), no memory
# bank, see ../_base_/distillers/dcd.py for the loss.
_base_ = ['../crd/resnet34_resnet18_in1k.py', '../_base_/distillers/dcd.py']

model = dict(
    distiller=dict(
        _base_.dcd_distiller,
        _delete_=True,
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=512, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=512, dim_out=128))))

custom_hooks = []
