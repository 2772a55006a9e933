# An mmpretrain classifier around one of crd_mm's CIFAR backbones: global
# average pooling and a 100-way linear head trained with cross-entropy.
# Configs using it set `model.backbone` and `model.head.in_channels` (the
# backbone's feature width C, listed in each backbone's docstring).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

model = dict(
    _scope_='mmpretrain',
    type='ImageClassifier',
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=None,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
    ),
)
