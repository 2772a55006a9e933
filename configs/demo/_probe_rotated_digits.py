# The demo's linear-probe task (tools/analysis/linear_probe.py --dataset-config):
# the ten digits turned by 90 degrees, a view of the data none of the demo's
# networks was trained on. The probe's linear head trains on the rotated
# training split (1,433 images, no augmentation) and is scored on the rotated
# test split (364 images); chance is 10%. Same pixel normalisation and 16x16
# size as the demo's networks were trained with.
data_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor',
    num_classes=10,
    mean=[77.85] * 3,
    std=[95.85] * 3,
    to_rgb=False,
)

rotate = dict(type='Rotate', angle=90.0, prob=1.0, random_negative_prob=0.0, pad_val=0)
probe_view = [dict(type='Resize', scale=16)]
probe_pipeline = [rotate] + probe_view + [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type='SklearnDigits', split='train', pipeline=probe_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
test_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(type='SklearnDigits', split='test', pipeline=probe_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = dict(type='Accuracy', topk=(1,))
