# The skeleton of the segmentation demo's distillation configs: the student learns from the
# frozen teacher of teacher.py. Recorders capture both networks' logits
# (decode_head.conv_seg, for CWD) and the features before the classifier
# (decode_head.bottleneck, for the dense contrastive losses) and the student's data samples
# (their ground-truth maps). Validation scores the student, then the teacher.
_base_ = ['./_shapes.py']

default_scope = 'mmrazor'

model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=_base_.student_net,
    teacher=_base_.teacher_net,
    # written by `python tools/train.py configs/demo/segmentation/teacher.py
    # --work-dir work_dirs/demo/segmentation/teacher`
    teacher_ckpt='work_dirs/demo/segmentation/teacher/iter_1000.pth',
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            logits=dict(type='ModuleOutputs', source='decode_head.conv_seg'),
            feat=dict(type='ModuleOutputs', source='decode_head.bottleneck'),
            data_samples=dict(type='ModuleInputs', source=''),
        ),
        teacher_recorders=dict(
            logits=dict(type='ModuleOutputs', source='decode_head.conv_seg'),
            feat=dict(type='ModuleOutputs', source='decode_head.bottleneck'),
        ),
        distill_losses=dict(),
        connectors=dict(),
        loss_forward_mappings=dict(),
    ),
)
find_unused_parameters = True
val_cfg = dict(_delete_=True, type='mmrazor.SingleTeacherDistillValLoop')

# CWD (Shu et al., ICCV 2021) on the logits, as mmrazor's Cityscapes recipe (tau 1, weight 5
# there; 3 here).
cwd_loss = dict(type='ChannelWiseDivergence', tau=1, loss_weight=3)
cwd_mapping = dict(
    preds_S=dict(from_student=True, recorder='logits'),
    preds_T=dict(from_student=False, recorder='logits'),
)

# PixelCRD: CRD's NCE on 16 pixels per class and image through 128-d embedding heads;
# negatives are 256 queued teacher pixels of each other class (a PixelQueue).
pixel_crd_loss = dict(
    type='PixelCRDLoss',
    num_classes=_base_.num_classes,
    loss_weight=0.5,
    temperature=0.07,
    feat_dim=128,
    pixels_per_class=16,
    queue_size=256,
)
pixel_crd_connectors = dict(
    pixel_s=dict(type='PixelEmbedConnector', dim_in=_base_.student_feat_dim, dim_out=128),
    pixel_t=dict(type='PixelEmbedConnector', dim_in=_base_.teacher_feat_dim, dim_out=128),
)
pixel_crd_mapping = dict(
    s_feats=dict(from_student=True, recorder='feat', connector='pixel_s'),
    t_feats=dict(from_student=False, recorder='feat', connector='pixel_t'),
    data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
)

# CIRKD's memory terms (the authors' temperatures, weights and enqueue rule; memories sized
# for this small set: 2,000 pixels and 200 regions per class, of which 256 and 64 are sampled
# per step; the authors' 4096 // C + 1 and 1024 // C + 1 exceed them at C = 4).
cirkd_loss = dict(
    type='CIRKDLoss',
    num_classes=_base_.num_classes,
    teacher_channels=_base_.teacher_feat_dim,
    student_channels=_base_.student_feat_dim,
    pixel_memory_size=2000,
    region_memory_size=200,
    pixel_contrast_size=256,
    region_contrast_size=64,
)
cirkd_mapping = dict(
    s_feats=dict(from_student=True, recorder='feat'),
    t_feats=dict(from_student=False, recorder='feat'),
    data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
)
