# The CKD authors' ImageNet schedule (ZhouXinzzzzz/CKD,
# configs/imagenet/r34_r18/ckd.yaml): SGD lr 0.2 for a total batch of 512,
# momentum 0.9, weight decay 1e-4, 200 epochs, cosine decay of the learning
# rate to 0 stepped once per epoch (their CosineAnnealingLR with T_max = 200),
# with mmpretrain's default runtime. The batch itself belongs to the data:
# recipes using this schedule set `train_dataloader.batch_size` so that GPUs x
# batch = 512 (8 x 64). CKD's negatives are the other samples of the batch on
# each GPU, so the split matters: the authors ran torch's DataParallel, which
# computes the loss on each GPU's share of the 512 images.
_base_ = ['./imagenet_bs256_100e.py']

optim_wrapper = dict(optimizer=dict(lr=0.2))
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', by_epoch=True, begin=0, end=200, T_max=200, eta_min=0
)
train_cfg = dict(max_epochs=200)
# --auto-scale-lr scales lr from this total batch
auto_scale_lr = dict(base_batch_size=512)
