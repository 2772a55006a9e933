# CKD, ResNet-34 -> ResNet-18 on ImageNet-1k with the CKD authors' recipe
# (ZhouXinzzzzz/CKD, configs/imagenet/r34_r18/ckd.yaml): CE 1.0 + 10 * CKD on
# the logits (T = 1), batch 512 = 8 GPUs x 64 images, SGD lr 0.2, wd 1e-4,
# 200 epochs with cosine decay (../_base_/schedules/imagenet_bs512_200e_cosine.py).
# The networks, data and teacher checkpoint are those of
# ../crd/resnet34_resnet18_in1k.py: mmpretrain's ResNet-18 trained from
# scratch and its released ResNet-34, frozen. No embedding heads, no memory
# bank: the negatives are the other samples of each GPU's batch of 64.
_base_ = [
    '../_base_/models/in1k_resnet34_resnet18_distill.py',
    '../_base_/datasets/imagenet_bs32_crd.py',
    '../_base_/schedules/imagenet_bs512_200e_cosine.py',
    '../_base_/distillers/ckd.py',
]

default_scope = 'mmrazor'

model = dict(distiller=_base_.ckd_distiller)

# 64 images per GPU on 8 GPUs: the authors' total batch of 512
train_dataloader = dict(batch_size=64)
