# The dense contrastive pieces added to the Cityscapes CWD recipes of this folder (PSPNet and
# DeepLabV3: R101-d8 teacher, R18-d8 student). Both decode heads end in a `bottleneck`
# ConvModule whose output (the features before the classifier) has 512 channels in the
# R101 configs and 128 in the R18 ones, at stride 8; this file defines the recorders, the
# connectors, the losses and their mappings that the recipes put into the model.
# (each recipe imports crd_mm itself: custom_imports may be set by one base only)

num_classes = 19
teacher_channels = 512
student_channels = 128

dense_student_recorders = dict(
    feat=dict(type='ModuleOutputs', source='decode_head.bottleneck'),
    # the data samples (their ground-truth maps) of the batch
    data_samples=dict(type='ModuleInputs', source=''),
)
dense_teacher_recorders = dict(feat=dict(type='ModuleOutputs', source='decode_head.bottleneck'))

# PixelCRD: CRD's NCE objective on 16 pixels per class and image, 128-d embeddings, negatives
# the 512 most recent teacher (student) pixels of every other class. The weight and sizes are
# CRD's defaults carried over, not tuned on Cityscapes.
pixel_crd_loss = dict(
    type='PixelCRDLoss',
    num_classes=num_classes,
    loss_weight=0.8,
    temperature=0.07,
    feat_dim=128,
    pixels_per_class=16,
    queue_size=512,
)
pixel_crd_connectors = dict(
    pixel_s=dict(type='PixelEmbedConnector', dim_in=student_channels, dim_out=128),
    pixel_t=dict(type='PixelEmbedConnector', dim_in=teacher_channels, dim_out=128),
)
pixel_crd_mapping = dict(
    s_feats=dict(from_student=True, recorder='feat', connector='pixel_s'),
    t_feats=dict(from_student=False, recorder='feat', connector='pixel_t'),
    data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
)

# CIRKD's memory terms with the authors' settings: 20,000 pixel and 2,000 region entries per
# class (19 x 22,000 x 512 floats: 0.86 GB per GPU), 4096 // 19 + 1 and 1024 // 19 + 1 sampled
# slots per class, temperatures 0.1 and 1.0, weights 0.1 and 0.1, 16 pixels enqueued per class
# and image, enqueued before the loss; the projection head uses SyncBN as theirs.
cirkd_loss = dict(
    type='CIRKDLoss',
    num_classes=num_classes,
    teacher_channels=teacher_channels,
    student_channels=student_channels,
    norm_cfg=dict(type='SyncBN'),
)
cirkd_mapping = dict(
    s_feats=dict(from_student=True, recorder='feat'),
    t_feats=dict(from_student=False, recorder='feat'),
    data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
)

# what each recipe merges into mmrazor's CWD distiller (its CWD loss stays)
pixel_crd_distiller = dict(
    student_recorders=dense_student_recorders,
    teacher_recorders=dense_teacher_recorders,
    connectors=pixel_crd_connectors,
    distill_losses=dict(loss_pixel_crd=pixel_crd_loss),
    loss_forward_mappings=dict(loss_pixel_crd=pixel_crd_mapping),
)
cirkd_distiller = dict(
    student_recorders=dense_student_recorders,
    teacher_recorders=dense_teacher_recorders,
    distill_losses=dict(loss_cirkd=cirkd_loss),
    loss_forward_mappings=dict(loss_cirkd=cirkd_mapping),
)
