# CRD added to mmrazor's PKD RetinaNet config: ResNeXt-101-64x4d teacher -> ResNet-50 student on
# COCO (data/coco). Everything of the base stays (PKD on the four FPN levels, the teacher's
# released checkpoint, the 2x schedule); this file only adds image-level CRD on the pooled last
# backbone stage (C5, 2048 channels in both networks) and what CRD needs to run.
_base_ = ['mmrazor::distill/mmdet/pkd/pkd_fpn_retina_x101_retina_r50_2x_coco.py']

custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

# CRD's memory bank is indexed by each image's dataset index (`sample_idx`), which mmdet's
# PackDetInputs drops unless it is a meta key. Keep the base pipeline and only extend the
# packing transform's meta_keys (mmdet's defaults when the base sets none).
__pipeline = _base_.train_dataloader.dataset.pipeline
__meta_keys = __pipeline[-1].get(
    'meta_keys',
    ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip', 'flip_direction'),
)
train_pipeline = [*__pipeline[:-1], dict(__pipeline[-1], meta_keys=(*__meta_keys, 'sample_idx'))]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

model = dict(
    distiller=dict(
        student_recorders=dict(
            c5=dict(type='ModuleOutputs', source='backbone'),
            data_samples=dict(type='ModuleInputs', source=''),
        ),
        teacher_recorders=dict(c5=dict(type='ModuleOutputs', source='backbone')),
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=2048, dim_out=128),
            crd_t=dict(type='CRDConnector', dim_in=2048, dim_out=128),
        ),
        distill_losses=dict(
            # COCO images have no single class: negatives are any other training image.
            loss_crd=dict(
                type='CRDLoss',
                loss_weight=0.8,
                num_negatives=16384,
                feat_dim=128,
                negative_sampling='uniform',
                positive='exact',
            )
        ),
        loss_forward_mappings=dict(
            loss_crd=dict(
                s_feats=dict(from_student=True, recorder='c5', connector='crd_s'),
                t_feats=dict(from_student=False, recorder='c5', connector='crd_t'),
                data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
            )
        ),
    )
)

# Builds the banks (one row per training image), updates them after every step and
# keeps them in checkpoints.
custom_hooks = [dict(type='CRDMemoryBankHook')]

# a NaN/inf loss stops the run at that iteration, naming the terms (added to
# the base's default_hooks, as in every crd_mm recipe)
default_hooks = dict(stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'))
