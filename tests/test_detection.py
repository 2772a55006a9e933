"""Contrastive distillation composed with mmrazor's detection distillation configs.

The configs under ``configs/detection/`` inherit mmrazor's PKD configs through
``_base_`` and only add CRD (RetinaNet) or CKD (Faster R-CNN). These tests
parse and build them, check that the CKD teacher logits are the teacher's
classification of the student's sampled proposals, and train each config
for two iterations plus a validation loop through ``tools/train.py`` on a
tiny COCO-format dataset written into ``tmp_path``.
"""

import glob
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.runner.checkpoint import (
    get_deprecated_model_names,
    get_external_models,
    get_torchvision_models,
)

import crd_mm  # noqa: F401  (registers crd_mm and patches the stack before mmrazor is used)

CRD_CONFIG = 'configs/detection/crd_pkd_fpn_retina_x101_retina_r50_2x_coco.py'
CKD_CONFIG = 'configs/detection/ckd_pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py'
BASES = {
    CRD_CONFIG: 'mmrazor::distill/mmdet/pkd/pkd_fpn_retina_x101_retina_r50_2x_coco.py',
    CKD_CONFIG: 'mmrazor::distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py',
}
OURS = {CRD_CONFIG: 'loss_crd', CKD_CONFIG: 'loss_ckd'}
PKD_LOSSES = [f'loss_pkd_fpn{i}' for i in range(4)]
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
IMAGE_SIZE = 64
# Real COCO category ids and names: CocoDataset maps them to its 80 labels by name.
CATEGORIES = [dict(id=1, name='person'), dict(id=3, name='car'), dict(id=18, name='dog')]


def load_config(path):
    return Config.fromfile(osp.join(REPO_ROOT, path))


def write_tiny_coco(root, num_images=4, num_val=2, seed=0):
    """Noisy IMAGE_SIZE^2 PNGs with one or two filled boxes each, and COCO jsons.

    Returns the annotation files of the training set (all images) and of the
    validation set (the first ``num_val``).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, annotations = [], []
    for img_id in range(1, num_images + 1):
        img = rng.integers(0, 60, size=(IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
        for _ in range(1 + img_id % 2):
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            x, y = (int(v) for v in rng.integers(0, IMAGE_SIZE // 2, size=2))
            w, h = (int(v) for v in rng.integers(IMAGE_SIZE // 4, IMAGE_SIZE // 2, size=2))
            img[y : y + h, x : x + w] = 80 + 50 * CATEGORIES.index(cat)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=img_id,
                    category_id=cat['id'],
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=0,
                )
            )
        file_name = f'{img_id:06d}.png'
        cv2.imwrite(osp.join(root, 'images', file_name), img)
        images.append(dict(id=img_id, file_name=file_name, width=IMAGE_SIZE, height=IMAGE_SIZE))
    ann_files = []
    for split, count in (('train', num_images), ('val', num_val)):
        ann_files.append(osp.join(root, f'{split}.json'))
        with open(ann_files[-1], 'w') as f:
            json.dump(
                dict(
                    images=images[:count],
                    categories=CATEGORIES,
                    annotations=[a for a in annotations if a['image_id'] <= count],
                ),
                f,
            )
    return ann_files


def pretrained_urls(cfg):
    """URLs of every ``Pretrained`` init in a config dict, resolved as mmengine resolves them."""
    if isinstance(cfg, (list, tuple)):
        return [url for item in cfg for url in pretrained_urls(item)]
    if not isinstance(cfg, dict):
        return []
    urls = [url for value in cfg.values() for url in pretrained_urls(value)]
    checkpoint = cfg.get('checkpoint')
    if cfg.get('type') == 'Pretrained' and isinstance(checkpoint, str):
        scheme, _, name = checkpoint.partition('://')
        if scheme == 'torchvision':
            checkpoint = get_torchvision_models()[name]
        elif scheme in ('open-mmlab', 'openmmlab'):
            checkpoint = get_external_models()[get_deprecated_model_names().get(name, name)]
        urls.append(checkpoint)
    return urls


def offline_torch_home(root, path):
    """TORCH_HOME for a training run of config ``path`` that must not download backbone weights.

    The student and teacher configs initialise their backbones from ImageNet
    checkpoints on the web (``init_cfg=dict(type='Pretrained', ...)``). The
    tests run offline, so an empty stand-in sits at each checkpoint's cache
    path: mmengine loads it non-strictly and the backbone keeps its random
    initialisation. Everything else is the real initialisation path.
    """
    torch_home = osp.join(root, 'torch_home')
    cache = osp.join(torch_home, 'hub', 'checkpoints')  # torch.hub's cache under TORCH_HOME
    os.makedirs(cache)
    model = load_config(path).model
    for sub in (model.architecture, model.teacher):
        for url in pretrained_urls(get_config(sub.cfg_path).model.to_dict()):
            torch.save({}, osp.join(cache, osp.basename(url)))
    return torch_home


def train_options(data_root, work_dir):
    """--cfg-options shrinking a COCO config to the tiny dataset: 2 iterations, then validation."""
    options = {
        'model.teacher_ckpt': None,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'train_dataloader.dataset.pipeline.2.scale': (IMAGE_SIZE, IMAGE_SIZE),
        'val_dataloader.dataset.pipeline.1.scale': (IMAGE_SIZE, IMAGE_SIZE),
        'val_evaluator.ann_file': osp.join(data_root, 'val.json'),
        'default_hooks.logger.interval': 1,
        'log_processor.window_size': 1,  # log each iteration's values, not running means
        'default_hooks.checkpoint.interval': -1,
        'default_hooks.checkpoint.save_last': False,
        'work_dir': work_dir,
    }
    for split in ('train', 'val'):
        options[f'{split}_dataloader.batch_size'] = 2
        options[f'{split}_dataloader.num_workers'] = 0
        options[f'{split}_dataloader.persistent_workers'] = False
        options[f'{split}_dataloader.dataset.data_root'] = data_root
        options[f'{split}_dataloader.dataset.ann_file'] = f'{split}.json'
        options[f'{split}_dataloader.dataset.data_prefix.img'] = 'images/'
    return [
        f'{key}={value}' if isinstance(value, str) else f'{key}={value!r}'.replace(' ', '')
        for key, value in options.items()
    ]


@pytest.mark.parametrize('path', [CRD_CONFIG, CKD_CONFIG], ids=['crd_retinanet', 'ckd_faster_rcnn'])
def test_config_composes_with_mmrazor_base_and_builds(path):
    from mmrazor.registry import MODELS

    cfg, base = load_config(path), get_config(BASES[path])
    losses = cfg.model.distiller.distill_losses
    assert sorted(losses) == sorted([*base.model.distiller.distill_losses, OURS[path]])
    for name in PKD_LOSSES:  # the base's losses stay as they were
        assert losses[name] == base.model.distiller.distill_losses[name]
    assert cfg.model.teacher_ckpt == base.model.teacher_ckpt
    assert cfg.model.teacher_ckpt.startswith('https://download.openmmlab.com/mmdetection/')
    assert (
        cfg.model.architecture == base.model.architecture
        and cfg.model.teacher == base.model.teacher
    )
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    pipeline, base_pipeline = (
        cfg.train_dataloader.dataset.pipeline,
        base.train_dataloader.dataset.pipeline,
    )
    assert pipeline[:-1] == base_pipeline[:-1] and pipeline[-1].type == base_pipeline[-1].type
    if path == CRD_CONFIG:
        assert pipeline[-1].meta_keys[-1] == 'sample_idx'
        assert cfg.custom_hooks == [dict(type='CRDMemoryBankHook')]
        assert losses.loss_crd.negative_sampling == 'uniform'
    else:
        assert pipeline == base_pipeline
        assert losses.loss_ckd == dict(type='CKDLoss', loss_weight=0.1, temperature=1.0)
    cfg.model.teacher_ckpt = None
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == (
        'FpnTeacherDistill' if path == CRD_CONFIG else 'FpnRoITeacherDistill'
    )
    assert sorted(model.distiller.distill_losses) == sorted(losses)


def detection_batch(num_images=2, seed=0):
    """A data batch as mmdet's PackDetInputs gives it: uint8 images and samples with boxes."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(num_images):
        inputs.append(
            torch.randint(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=gen)
        )
        shape = (IMAGE_SIZE, IMAGE_SIZE)
        sample = DetDataSample(
            metainfo=dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0), sample_idx=i)
        )
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[5.0, 10.0, 40.0, 50.0], [20.0, 4.0, 60.0, 30.0]]),
            labels=torch.tensor([0, 16 + i]),
        )
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_ckd_teacher_logits_classify_the_students_sampled_rois():
    """Row i of the teacher's and the student's RoI logits is the same sampled proposal."""
    from mmrazor.registry import MODELS

    cfg = load_config(CKD_CONFIG)
    cfg.model.teacher_ckpt = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    data = model.data_preprocessor(detection_batch(), training=True)
    losses = model(**data, mode='loss')
    for name in ['loss_ckd', *PKD_LOSSES]:
        assert torch.isfinite(losses[f'distill.{name}']), name

    distiller = model.distiller
    rois = distiller.student_recorders.get_recorder('rois').get_record_data(data_idx=1)
    s_logits = distiller.student_recorders.get_recorder('cls_score').get_record_data()
    t_logits = distiller.teacher_recorders.get_recorder('cls_score').get_record_data()
    sampler = model.student.roi_head.bbox_sampler
    assert rois.shape[1] == 5 and 2 <= rois.shape[0] <= 2 * sampler.num
    assert sorted(rois[:, 0].unique().tolist()) == [0.0, 1.0]  # proposals of both images
    assert s_logits.shape == t_logits.shape == (rois.shape[0], 81)
    assert not t_logits.requires_grad and s_logits.requires_grad
    torch.testing.assert_close(
        losses['distill.loss_ckd'], distiller.distill_losses['loss_ckd'](s_logits, t_logits)
    )
    # The teacher's FPN record is intact after its RoI pass (PKD still sees it).
    assert len(distiller.teacher_recorders.get_recorder('fpn').data_buffer) == 1
    with torch.no_grad():
        expected = model.teacher.roi_head._bbox_forward(
            model.teacher.extract_feat(data['inputs']), rois
        )
    torch.testing.assert_close(t_logits, expected['cls_score'])

    losses['distill.loss_ckd'].backward()
    assert model.student.roi_head.bbox_head.fc_cls.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_roi_teacher_distill_requires_a_rois_recorder():
    from mmrazor.registry import MODELS

    cfg = load_config(CKD_CONFIG)
    cfg.model.teacher_ckpt = None
    cfg.model.rois_recorder = 'proposals'
    with pytest.raises(ValueError, match="recorder named 'proposals' of type ModuleInputs"):
        MODELS.build(cfg.model)


def logged_scalars(work_dir):
    """Every line of the run's vis_data/scalars.json, as dicts."""
    (path,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize('path', [CRD_CONFIG, CKD_CONFIG], ids=['crd_retinanet', 'ckd_faster_rcnn'])
def test_config_trains_and_validates_through_train_script(path, tmp_path, cmd):
    data_root = str(tmp_path / 'coco')
    write_tiny_coco(data_root)
    work_dir = str(tmp_path / 'work')
    out = cmd.python(
        ['tools/train.py', path, '--cfg-options', *train_options(data_root, work_dir)],
        env=dict(TORCH_HOME=offline_torch_home(tmp_path, path)),
        timeout=300,
    )
    scalars = logged_scalars(work_dir)
    train = [s for s in scalars if 'loss' in s]
    assert [s['iter'] for s in train] == [1, 2]
    for step in train:
        for name in ['student.loss_cls', *(f'distill.{n}' for n in (*PKD_LOSSES, OURS[path]))]:
            assert np.isfinite(step[name]), (name, step)
    # mmrazor's validation loop ran student and teacher over the validation set and evaluated
    # both (randomly initialised detectors may find nothing: CocoMetric then reports no mAP).
    assert out.count('Evaluating bbox...') == 2
    assert [s['step'] for s in scalars if 'loss' not in s] == [1]
    if path == CRD_CONFIG:
        assert 'CRDMemoryBankHook: 1 bank(s) of 4 samples' in out
        # the bank rows of the step's 2 images (of 4) were written after each step
        assert [s['loss_crd/coverage'] for s in train] == [0.5, 1.0]
