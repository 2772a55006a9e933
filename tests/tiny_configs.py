"""Small but real configs for tests: mmpretrain classifiers distilled with mmrazor on CPU."""

import copy

from mmengine.config import Config

import crd_mm  # noqa: F401  (a Config built from a dict does not run custom_imports)


def tiny_classifier(width, num_classes=10):
    """A two-stage mmpretrain ResNet classifier whose pooled feature has ``2 * width`` channels."""
    return dict(
        _scope_='mmpretrain',
        type='ImageClassifier',
        backbone=dict(
            type='ResNet',
            depth=18,
            num_stages=2,
            strides=(1, 2),
            dilations=(1, 1),
            out_indices=(1,),
            stem_channels=width,
            base_channels=width,
        ),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=num_classes,
            in_channels=2 * width,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        ),
    )


def image_folder_loader(data_root, batch_size=4, shuffle=True):
    return dict(
        batch_size=batch_size,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=shuffle),
        dataset=dict(
            _scope_='mmpretrain',
            type='CustomDataset',
            data_root=str(data_root),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')],
        ),
    )


def crd_distiller(loss_cfg, s_width=8, t_width=16, feat_dim=16):
    """ConfigurableDistiller with CRD on the pooled neck features of student and teacher."""
    loss = dict(type='CRDLoss', loss_weight=0.8, num_negatives=8, feat_dim=feat_dim)
    loss.update(loss_cfg)
    return dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            feat=dict(type='ModuleOutputs', source='neck'),
            data_samples=dict(type='ModuleInputs', source=''),
        ),
        teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='neck')),
        distill_losses=dict(loss_crd=loss),
        connectors=dict(
            crd_s=dict(type='CRDConnector', dim_in=2 * s_width, dim_out=feat_dim),
            crd_t=dict(type='CRDConnector', dim_in=2 * t_width, dim_out=feat_dim),
        ),
        loss_forward_mappings=dict(
            loss_crd=dict(
                s_feats=dict(from_student=True, recorder='feat', connector='crd_s'),
                t_feats=dict(from_student=False, recorder='feat', connector='crd_t'),
                data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
            )
        ),
    )


def crd_config(
    data_root, work_dir, max_epochs=1, batch_size=4, loss_cfg=None, hooks=None, extra_imports=()
):
    """A complete SingleTeacherDistill + CRDConnector + CRDLoss + CRDMemoryBankHook config."""
    return distill_config(
        data_root,
        work_dir,
        crd_distiller(loss_cfg or {}),
        max_epochs,
        batch_size,
        hooks,
        extra_imports,
    )


def crcd_distiller(s_width=8, t_width=16, feat_dim=16, num_negatives=8):
    """CRCD's feature relation (on CRDConnector embeddings) and gradient relation, side by side."""
    crd = crd_distiller({}, s_width, t_width, feat_dim)
    common = dict(num_negatives=num_negatives, feat_dim=feat_dim)
    return dict(
        crd,
        student_recorders=dict(
            crd['student_recorders'], logits=dict(type='ModuleOutputs', source='head.fc')
        ),
        teacher_recorders=dict(
            crd['teacher_recorders'],
            logits=dict(type='ModuleOutputs', source='head.fc'),
            fc_weight=dict(type='Parameter', source='head.fc.weight'),
        ),
        distill_losses=dict(
            loss_crcd=dict(type='CRCDLoss', **common),
            loss_crcd_grad=dict(
                type='CRCDLoss',
                relation='gradient',
                student_channels=2 * s_width,
                teacher_channels=2 * t_width,
                **common,
            ),
        ),
        loss_forward_mappings=dict(
            loss_crcd=crd['loss_forward_mappings']['loss_crd'],
            loss_crcd_grad=dict(
                s_feats=dict(from_student=True, recorder='feat'),
                t_feats=dict(from_student=False, recorder='feat'),
                data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
                s_logits=dict(from_student=True, recorder='logits'),
                t_logits=dict(from_student=False, recorder='logits'),
                t_fc_weight=dict(from_student=False, recorder='fc_weight'),
            ),
        ),
    )


def distill_config(
    data_root, work_dir, distiller, max_epochs=1, batch_size=4, hooks=None, extra_imports=()
):
    """A complete SingleTeacherDistill config around ``distiller``, with CRDMemoryBankHook."""
    cfg = dict(
        default_scope='mmrazor',
        custom_imports=dict(imports=['crd_mm', *extra_imports], allow_failed_imports=False),
        work_dir=str(work_dir),
        model=dict(
            _scope_='mmrazor',
            type='SingleTeacherDistill',
            data_preprocessor=dict(
                type='mmpretrain.ClsDataPreprocessor',
                mean=[127.5] * 3,
                std=[127.5] * 3,
                to_rgb=True,
            ),
            architecture=tiny_classifier(8),
            teacher=tiny_classifier(16),
            teacher_ckpt=None,
            distiller=distiller,
        ),
        train_dataloader=image_folder_loader(data_root, batch_size),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=1),
        ),
        custom_hooks=[dict(type='CRDMemoryBankHook')] if hooks is None else hooks,
        randomness=dict(seed=0),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
    )
    return Config(copy.deepcopy(cfg))


TINY_TEACHERS = dict(
    t1=16, t2=12
)  # teacher name -> tiny_classifier width (pooled feature: 2 x width)


def multi_teacher_distiller(s_width=8, teacher_widths=None, feat_dim=16, num_negatives=8):
    """MultiTeacherDistiller: CRD against every teacher plus KD on the teachers' averaged logits."""
    teacher_widths = teacher_widths or TINY_TEACHERS
    recorders = dict(
        feat=dict(type='ModuleOutputs', source='neck'),
        logits=dict(type='ModuleOutputs', source='head.fc'),
    )
    crd = dict(type='CRDLoss', loss_weight=0.8, num_negatives=num_negatives, feat_dim=feat_dim)
    losses, connectors, mappings = (
        dict(loss_kd=dict(type='KLDivergence', tau=4, loss_weight=1.0)),
        {},
        {},
    )
    mappings['loss_kd'] = dict(
        preds_S=dict(from_student=True, recorder='logits'),
        preds_T=dict(from_student=False, teacher=list(teacher_widths), recorder='logits'),
    )
    for name, width in teacher_widths.items():
        losses[f'loss_crd_{name}'] = crd
        connectors[f'crd_s_{name}'] = dict(
            type='CRDConnector', dim_in=2 * s_width, dim_out=feat_dim
        )
        connectors[f'crd_t_{name}'] = dict(type='CRDConnector', dim_in=2 * width, dim_out=feat_dim)
        mappings[f'loss_crd_{name}'] = dict(
            s_feats=dict(from_student=True, recorder='feat', connector=f'crd_s_{name}'),
            t_feats=dict(
                from_student=False, teacher=name, recorder='feat', connector=f'crd_t_{name}'
            ),
            data_samples=dict(from_student=True, recorder='data_samples', data_idx=1),
        )
    return dict(
        type='MultiTeacherDistiller',
        student_recorders=dict(recorders, data_samples=dict(type='ModuleInputs', source='')),
        teacher_recorders={name: recorders for name in teacher_widths},
        distill_losses=losses,
        connectors=connectors,
        loss_forward_mappings=mappings,
    )


def multi_teacher_config(
    data_root,
    work_dir,
    ckpts,
    distiller=None,
    max_epochs=1,
    batch_size=4,
    hooks=None,
    extra_imports=(),
):
    """A MultiTeacherDistill config: ``TINY_TEACHERS`` loaded from ``ckpts`` (name -> path)."""
    cfg = distill_config(
        data_root,
        work_dir,
        distiller or multi_teacher_distiller(),
        max_epochs,
        batch_size,
        hooks,
        extra_imports,
    )
    model = cfg.model.to_dict()
    del model['teacher'], model['teacher_ckpt']
    model.update(
        type='MultiTeacherDistill',
        teachers={
            name: dict(cfg=tiny_classifier(width), ckpt=ckpts.get(name))
            for name, width in TINY_TEACHERS.items()
        },
    )
    cfg.model = model
    return cfg
