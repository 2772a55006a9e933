"""A cross-modal teacher's view stays paired with the student's: geometry and batch augments.

The depth example of docs/crossmodal.md is read from the page itself and run as written. Its
depth maps are the green channel of the RGB images, so an aligned teacher view must equal the
student's green channel pixel for pixel, whatever crop and flip were drawn.
"""

import copy
import json
import os
import os.path as osp
import random
import re

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmpretrain.registry import TRANSFORMS
from test_crossmodal import build_model, crossmodal_config
from tiny_configs import crd_distiller, distill_config

import crd_mm  # noqa: F401  (registers the plugin's modules)
from crd_mm.datasets.transforms import KeyAlignedGeometry, TeacherView

DOC = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'docs', 'crossmodal.md')
GREEN = 1  # BGR: the depth maps written here are the images' channel 1


def documented_depth_example():
    """The python block of docs/crossmodal.md that defines ``rgbd_train_pipeline``, executed."""
    with open(DOC, encoding='utf-8') as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    (block,) = [b for b in blocks if 'rgbd_train_pipeline = [' in b]
    namespace = {}
    exec(block, namespace)  # plain dicts and lists
    return namespace


def write_rgbd(root, num_classes=2, per_class=2, size=(40, 56), seed=0):
    """RGB PNGs under root/rgb, depth PNGs (their green channel) under root/depth, train.json."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'rgb'))
    os.makedirs(osp.join(root, 'depth'))
    data_list = []
    for c in range(num_classes):
        colour = rng.integers(0, 256, size=3)
        for i in range(per_class):
            noise = rng.integers(-60, 61, size=(*size, 3))
            img = np.clip(colour + noise, 0, 255).astype(np.uint8)
            name = f'{c}_{i}.png'
            cv2.imwrite(osp.join(root, 'rgb', name), img)
            cv2.imwrite(osp.join(root, 'depth', name), img[..., GREEN])
            data_list.append(dict(img_path=name, depth_path=name, gt_label=c))
    ann = dict(metainfo=dict(classes=[f'class_{c}' for c in range(num_classes)]))
    ann['data_list'] = data_list
    with open(osp.join(root, 'train.json'), 'w') as f:
        json.dump(ann, f)
    return str(root)


def geometry_step(pipeline):
    """The KeyAlignedGeometry dict of a pipeline, and its wrapped transforms by type."""
    (wrapper,) = [t for t in pipeline if t['type'] == 'KeyAlignedGeometry']
    return wrapper, {t['type']: t for t in wrapper['transforms']}


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build transforms in mmpretrain's scope, whatever scope an earlier test's Runner left."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


@pytest.mark.parametrize('flip_prob', [1.0, None])  # None: the page's own probability
def test_documented_depth_pipeline_aligns_pixel_for_pixel(tmp_path, flip_prob):
    root = write_rgbd(tmp_path / 'rgbd', num_classes=1, per_class=1)
    pipeline = copy.deepcopy(documented_depth_example()['rgbd_train_pipeline'])
    wrapper, inner = geometry_step(pipeline)
    assert wrapper['keys'] == ['depth'] and {'RandomResizedCrop', 'RandomFlip'} <= set(inner)
    if flip_prob is not None:
        inner['RandomFlip']['prob'] = flip_prob
    pipeline = Compose([TRANSFORMS.build(t) for t in pipeline[:-1]])  # all but PackInputs
    img = cv2.imread(osp.join(root, 'rgb', '0_0.png'))
    flips = set()
    for seed in range(12):
        np.random.seed(seed)
        results = pipeline(
            dict(
                img_path=osp.join(root, 'rgb', '0_0.png'),
                depth_path=osp.join(root, 'depth', '0_0.png'),
            )
        )
        student, teacher = results['img'], results['teacher_inputs']
        assert student.shape == (224, 224, 3) and teacher.shape == (1, 224, 224)
        # the teacher sees the student's pixels: its depth is the student's green channel
        np.testing.assert_array_equal(teacher[0].numpy(), student[..., GREEN])
        flips.add(results['flip'])
        # and the crop really cut the image: the view is not the whole image resized
        whole = cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR)
        if results['flip']:
            whole = whole[:, ::-1]
        assert np.abs(student.astype(int) - whole).mean() > 1
    assert flips == ({True} if flip_prob == 1.0 else {True, False})


def test_wrapper_changes_nothing_for_img():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    geometry = [
        dict(type='RandomResizedCrop', scale=16),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    ]
    for seed in range(6):
        np.random.seed(seed)
        random.seed(seed)
        torch.manual_seed(seed)
        bare = Compose([TRANSFORMS.build(t) for t in geometry])(dict(img=img.copy()))
        after_bare = (np.random.rand(), random.random(), torch.rand(1).item())
        np.random.seed(seed)
        random.seed(seed)
        torch.manual_seed(seed)
        wrapped = KeyAlignedGeometry(geometry, keys=['depth', 'mask'])(
            dict(img=img.copy(), depth=img[..., 0].copy(), mask=img[..., 2].copy())
        )
        assert (np.random.rand(), random.random(), torch.rand(1).item()) == after_bare
        np.testing.assert_array_equal(wrapped['img'], bare['img'])
        assert (wrapped['flip'], wrapped['img_shape']) == (bare['flip'], bare['img_shape'])
        np.testing.assert_array_equal(wrapped['depth'], bare['img'][..., 0])
        np.testing.assert_array_equal(wrapped['mask'], bare['img'][..., 2])


def teacher_view_after(transforms, depth=None, in_key='depth', **results):
    """Run ``transforms`` then ``TeacherView(in_key)`` on a 30x44 image with a registered depth."""
    img = np.random.default_rng(2).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    sample = dict(img=img, img_shape=(30, 44), ori_shape=(30, 44), **results)
    sample['depth'] = img[..., GREEN].copy() if depth is None else depth
    pipeline = Compose([*(TRANSFORMS.build(t) for t in transforms), TeacherView(in_key=in_key)])
    return pipeline(sample)


CROP = dict(type='RandomResizedCrop', scale=16)
FLIP = dict(type='RandomFlip', prob=1.0, direction='horizontal')


@pytest.mark.parametrize(
    'transforms, error',
    [
        ([CROP], r"'img' is 16x16 but 'depth' is 30x44"),  # a bare crop
        ([FLIP], r"'img' was flipped \(horizontal"),  # a bare flip keeps the size
        ([CROP, FLIP], r"'img' is 16x16 but 'depth' is 30x44"),
        # aligned, then a geometric transform outside the wrapper
        (
            [dict(type='KeyAlignedGeometry', keys=['depth'], transforms=[CROP]), FLIP],
            r'changed after',
        ),
        (
            [
                dict(type='KeyAlignedGeometry', keys=['depth'], transforms=[CROP]),
                dict(type='Resize', scale=8),
            ],
            r"'img' is 8x8 but 'depth' is 16x16",
        ),
    ],
)
def test_unaligned_second_modality_is_refused(transforms, error):
    with pytest.raises(ValueError, match=r"TeacherView\(in_key='depth'\).*" + error) as info:
        teacher_view_after(transforms)
    assert "KeyAlignedGeometry', keys=['depth']" in str(info.value)  # the fix, spelled out


def test_aligned_and_untouched_second_modalities_are_accepted():
    # aligned: the teacher's view equals the student's green channel
    both = [dict(type='KeyAlignedGeometry', keys=['depth'], transforms=[CROP, FLIP])]
    results = teacher_view_after(both)
    assert results['flip'] and results['img'].shape[:2] == (16, 16)
    np.testing.assert_array_equal(results['teacher_inputs'][0].numpy(), results['img'][..., GREEN])
    # a depth map of its own resolution is fine while img is as loaded: no geometry yet
    small = np.zeros((15, 22), np.uint8)
    assert teacher_view_after([], depth=small)['teacher_inputs'].shape == (1, 15, 22)
    # but it cannot be aligned with one crop box, nor survive a crop of img alone
    with pytest.raises(ValueError, match=r"KeyAlignedGeometry: 'depth' does not show"):
        teacher_view_after(both, depth=small)
    with pytest.raises(ValueError, match=r"in_key='depth'.*16x16 but 'depth' is 15x22"):
        teacher_view_after([CROP], depth=small)
    # a wrapper placed after a bare flip cannot repair it
    late = [FLIP, dict(type='KeyAlignedGeometry', keys=['depth'], transforms=[CROP])]
    with pytest.raises(ValueError, match=r"'depth' does not show the pixels.*flipped"):
        teacher_view_after(late)
    with pytest.raises(ValueError, match=r'keys must name the other images'):
        KeyAlignedGeometry([CROP], keys=['img'])
    with pytest.raises(KeyError, match=r"no array 'depth'"):
        KeyAlignedGeometry([CROP], keys=['depth'])(dict(img=np.zeros((4, 4, 3), np.uint8)))


def rgbd_config(data_root, work_dir, pipeline):
    """The tiny CRD distiller as CrossModalDistill: teacher on depth (1 channel), student on RGB."""
    cfg = distill_config(data_root, work_dir, crd_distiller({}), max_epochs=1, batch_size=2)
    cfg.model.type = 'CrossModalDistill'
    cfg.model.teacher.backbone.in_channels = 1
    cfg.model.data_preprocessor = dict(
        type='mmpretrain.ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3
    )
    cfg.model.teacher_data_preprocessor = dict(
        type='mmpretrain.ClsDataPreprocessor', mean=[127.5], std=[127.5]
    )
    loader = copy.deepcopy(documented_depth_example()['train_dataloader'])
    loader.update(batch_size=2, num_workers=0)
    loader['dataset'].update(data_root=str(data_root), pipeline=pipeline)
    cfg.train_dataloader = loader
    cfg.default_hooks.checkpoint.interval = -1
    return cfg


def test_documented_depth_pipeline_trains_with_aligned_views(tmp_path):
    root = write_rgbd(tmp_path / 'rgbd')
    pipeline = copy.deepcopy(documented_depth_example()['rgbd_train_pipeline'])
    geometry_step(pipeline)[1]['RandomResizedCrop']['scale'] = 32  # 224 in the page: slower
    runner = Runner.from_cfg(rgbd_config(root, tmp_path / 'work', pipeline))
    seen = {}
    runner.model.teacher.backbone.register_forward_pre_hook(
        lambda m, args: seen.setdefault('teacher', []).append(args[0].detach().clone())
    )
    runner.model.student.backbone.register_forward_pre_hook(
        lambda m, args: seen.setdefault('student', []).append(args[0].detach().clone())
    )
    runner.train()
    assert len(seen['teacher']) == len(seen['student']) == 2  # 4 samples, batches of 2
    for teacher, student in zip(seen['teacher'], seen['student']):
        assert teacher.shape == (2, 1, 32, 32) and student.shape == (2, 3, 32, 32)
        # both normalised by (x - 127.5) / 127.5: the teacher's depth is the student's green
        torch.testing.assert_close(teacher[:, 0], student[:, GREEN], rtol=0, atol=0)
    assert np.isfinite(runner.message_hub.get_scalar('train/distill.loss_crd').current())


def test_unaligned_pipeline_stops_the_runner_before_training(tmp_path):
    root = write_rgbd(tmp_path / 'rgbd')
    pipeline = copy.deepcopy(documented_depth_example()['rgbd_train_pipeline'])
    wrapper, _ = geometry_step(pipeline)
    at = pipeline.index(wrapper)
    pipeline[at : at + 1] = wrapper['transforms']  # the crop and flip unwrapped: img only
    runner = Runner.from_cfg(rgbd_config(root, tmp_path / 'work', pipeline))
    with pytest.raises(ValueError, match=r"TeacherView\(in_key='depth'\).*KeyAlignedGeometry"):
        runner.train()
    assert runner.iter == 0


MIXUP = dict(augments=dict(type='Mixup', alpha=1.0))


def preprocessor(**kwargs):
    return dict(type='mmpretrain.ClsDataPreprocessor', num_classes=2, **kwargs)


@pytest.mark.parametrize(
    'where, built',
    [
        ('data_preprocessor', False),
        ('data_preprocessor', True),
        ('teacher_data_preprocessor', True),
    ],
)
def test_batch_augments_are_refused_at_build_time(imagefolder, tmp_path, where, built):
    cfg = preprocessor(mean=[128.0] * 2, std=[127.5] * 2, batch_augments=MIXUP)
    if where == 'teacher_data_preprocessor':
        cfg.update(mean=[127.5], std=[127.5])
    value = PRETRAIN_MODELS.build(cfg) if built else cfg
    assert not built or value.batch_augments is not None
    with pytest.raises(
        ValueError, match=rf'{where} \(the .*must not have batch_augments \(.*Mixup'
    ):
        build_model(imagefolder, tmp_path, **{where: value})


def test_batch_augments_of_the_architecture_are_refused(imagefolder, tmp_path):
    # without its own data_preprocessor, the algorithm takes the architecture's
    cfg = crossmodal_config(imagefolder, tmp_path, validate=False)
    cfg.model.architecture.data_preprocessor = preprocessor(
        mean=[128.0] * 2, std=[127.5] * 2, batch_augments=MIXUP
    )
    cfg.model.data_preprocessor = None
    with pytest.raises(
        ValueError, match=r'data_preprocessor \(the student.*must not have batch_augments'
    ):
        Runner.from_cfg(cfg).train()
