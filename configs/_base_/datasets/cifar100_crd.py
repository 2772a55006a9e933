# CIFAR-100 as the CRD paper trains on it (HobbitLong/RepDistiller):
# RandomCrop(32, padding=4) + horizontal flip for training, no augmentation
# for testing, normalisation with the per-channel CIFAR-100 mean/std the
# authors use ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)) x 255,
# batch 64. Reads mmpretrain's `CIFAR100` from the python-pickle archive
# unpacked under data/cifar100/cifar-100-python/ (never downloads).
# `PackInputs` keeps `sample_idx` in the data samples, which CRD's memory
# bank needs. The dicts carry `_scope_` so that distillation configs
# (default_scope 'mmrazor') can use them too.
dataset_type = 'CIFAR100'
data_root = 'data/cifar100'

data_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor',
    num_classes=100,
    mean=[129.3105, 124.1085, 112.404],
    std=[68.2125, 65.4075, 70.4055],
    # mmpretrain's CIFAR100 already yields RGB images
    to_rgb=False,
)

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(
        _scope_='mmpretrain',
        type=dataset_type,
        data_root=data_root,
        split='train',
        download=False,
        pipeline=train_pipeline,
    ),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

# the same loader over the test split, in order and without augmentation
val_dataloader = dict(
    train_dataloader,
    dataset=dict(train_dataloader['dataset'], split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(_scope_='mmpretrain', type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
