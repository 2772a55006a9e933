"""Segmentation: the bundled SyntheticShapes data, the demo configs and the Cityscapes recipes."""

import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner

import crd_mm  # noqa: F401

TESTS_DIR = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RECIPES = sorted(glob.glob(osp.join(ROOT, 'configs', 'segmentation', '*.py')))


@HOOKS.register_module(force=True)
class SegMemoryProbeHook(Hook):
    """Writes every rank's memory fingerprints after training (for the 2-process test)."""

    priority = 'LOWEST'

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def after_train(self, runner):
        from mmengine.dist import get_rank

        (owner,) = [h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook']
        prints = {name: memory.fingerprint() for name, memory in owner.banks.items()}
        torch.save(prints, osp.join(self.out_dir, f'memory_rank{get_rank()}.pth'))


def shapes(tmp_path, **kwargs):
    from crd_mm.datasets.synthetic_shapes import SyntheticShapes

    return SyntheticShapes(data_root=str(tmp_path), pipeline=[], **kwargs)


def read(dataset, index):
    import mmcv

    info = dataset.get_data_info(index)
    return mmcv.imread(info['img_path']), mmcv.imread(info['seg_map_path'], flag='unchanged')


def test_synthetic_shapes_are_generated_from_the_seed(tmp_path):
    first = shapes(tmp_path / 'a', split='train', num_images=6, seed=3)
    again = shapes(tmp_path / 'b', split='train', num_images=6, seed=3)
    other_seed = shapes(tmp_path / 'a', split='train', num_images=6, seed=4)
    val = shapes(tmp_path / 'a', split='val', num_images=6, seed=3)
    assert len(first) == 6 and first.metainfo['classes'][1:] == ('circle', 'square', 'triangle')
    image, mask = read(first, 0)
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
    for index in range(6):
        for twin in (again,):
            assert all(np.array_equal(a, b) for a, b in zip(read(first, index), read(twin, index)))
    assert not np.array_equal(read(first, 0)[0], read(other_seed, 0)[0])
    assert not np.array_equal(read(first, 0)[0], read(val, 0)[0])
    labels = np.unique(np.concatenate([read(first, i)[1].ravel() for i in range(6)]))
    assert set(labels.tolist()) <= {0, 1, 2, 3} and len(labels) >= 3
    # the cache is reused: a second dataset of the same recipe does not redraw the files
    stamp = osp.getmtime(first.get_data_info(0)['img_path'])
    shapes(tmp_path / 'a', split='train', num_images=6, seed=3)
    assert osp.getmtime(first.get_data_info(0)['img_path']) == stamp
    with pytest.raises(ValueError, match='split must be'):
        shapes(tmp_path, split='training')


def demo_cfg(name, tmp_path, iters=3):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', 'segmentation', name))
    cfg.work_dir = str(tmp_path / 'work')
    data_root = str(tmp_path / 'data')
    cfg.train_dataloader.dataset.update(num_images=16, data_root=data_root)
    cfg.val_dataloader.dataset.update(num_images=8, data_root=data_root)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_iters=iters, val_interval=iters)
    cfg.param_scheduler.end = iters
    cfg.default_hooks.logger.interval = 1
    if 'teacher_ckpt' in cfg.model:
        cfg.model.teacher_ckpt = None  # a random teacher: these tests check the machinery only
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('name', ['cwd_pixel_crd.py', 'cwd_cirkd.py'])
def test_demo_config_trains_validates_and_resumes_its_memory(name, tmp_path):
    cfg = demo_cfg(name, tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    scalars = runner.message_hub.log_scalars
    loss_name = 'distill.loss_pixel_crd' if name == 'cwd_pixel_crd.py' else 'distill.loss_cirkd'
    assert torch.isfinite(torch.tensor(scalars[f'train/{loss_name}'].current()))
    assert 'val/mIoU' in scalars and 'val/teacher.mIoU' in scalars
    checkpoint = torch.load(osp.join(cfg.work_dir, 'iter_3.pth'), weights_only=False)
    (state,) = checkpoint['crd_memory_banks'].values()
    assert state['kind'] == ('pixel_queue' if name == 'cwd_pixel_crd.py' else 'cirkd_memory')
    hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
    saved = next(iter(hook.banks.values())).fingerprint()

    resumed_cfg = demo_cfg(name, tmp_path)
    resumed_cfg.resume = True
    resumed_cfg.load_from = osp.join(cfg.work_dir, 'iter_3.pth')
    resumed = Runner.from_cfg(resumed_cfg)
    resumed.train()  # nothing left to train: restores and stops
    hook = next(h for h in resumed.hooks if type(h).__name__ == 'CRDMemoryBankHook')
    assert torch.equal(next(iter(hook.banks.values())).fingerprint(), saved)


def test_recipes_and_demo_configs_parse_and_their_losses_build():
    from mmengine.registry import DefaultScope

    assert len(RECIPES) == 5
    with DefaultScope.overwrite_default_scope('mmrazor'):  # whatever an earlier test left
        build_losses_and_connectors()


def build_losses_and_connectors():
    from mmrazor.registry import MODELS

    for path in RECIPES + sorted(
        glob.glob(osp.join(ROOT, 'configs', 'demo', 'segmentation', '*.py'))
    ):
        cfg = Config.fromfile(path)
        if cfg.get('model', {}).get('type') != 'SingleTeacherDistill':
            continue
        distiller = cfg.model.distiller
        for loss in distiller.distill_losses.values():
            MODELS.build(loss)
        for connector in distiller.get('connectors', {}).values():
            MODELS.build(connector)
        if any(
            loss.type in ('PixelCRDLoss', 'CIRKDLoss') for loss in distiller.distill_losses.values()
        ):
            assert [h.type for h in cfg.custom_hooks] == ['CRDMemoryBankHook'], path


def test_the_demo_teacher_checkpoint_is_the_one_the_distillers_name():
    # a user training the demo's teacher by hand gets the checkpoint the distillers name
    teacher = Config.fromfile(osp.join(ROOT, 'configs', 'demo', 'segmentation', 'teacher.py'))
    expected = f'work_dirs/demo/segmentation/teacher/iter_{teacher.train_cfg.max_iters}.pth'
    distill = Config.fromfile(osp.join(ROOT, 'configs', 'demo', 'segmentation', 'cwd.py'))
    assert distill.model.teacher_ckpt == expected
    assert distill.model.teacher == teacher.model


@pytest.mark.slow
@pytest.mark.parametrize('path', RECIPES, ids=osp.basename)
def test_every_segmentation_recipe_builds(path):
    from mmrazor.registry import MODELS

    cfg = Config.fromfile(path)
    cfg.model.teacher_ckpt = None
    model = MODELS.build(cfg.model)
    losses = model.distiller.distill_losses
    assert 'loss_cwd' in losses
    assert type(model.architecture.backbone).__name__ == 'ResNetV1c'
    assert model.architecture.backbone.depth == 18 and model.teacher.backbone.depth == 101
    if list(losses) != ['loss_cwd']:  # the dense losses' memories need the hook
        assert cfg.custom_hooks[-1].type == 'CRDMemoryBankHook'


@pytest.mark.slow
@pytest.mark.parametrize('name', ['cwd_pixel_crd.py', 'cwd_cirkd.py'])
def test_two_processes_keep_the_dense_memories_identical(name, tmp_path, cmd, free_port):
    cfg = demo_cfg(name, tmp_path, iters=3)
    cfg.custom_hooks.append(dict(type='SegMemoryProbeHook', out_dir=str(tmp_path)))
    cfg.custom_imports = dict(
        imports=[*cfg.custom_imports.imports, 'test_segmentation'], allow_failed_imports=False
    )
    cfg.dump(tmp_path / 'seg_dist.py')
    cmd.python(
        [
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={free_port}',
            'tools/train.py',
            str(tmp_path / 'seg_dist.py'),
            '--launcher',
            'pytorch',
        ],
        env={'PYTHONPATH': osp.pathsep.join([ROOT, TESTS_DIR]), 'OMP_NUM_THREADS': '1'},
        timeout=400,
    )
    ranks = [torch.load(tmp_path / f'memory_rank{r}.pth') for r in (0, 1)]
    assert list(ranks[0]) == list(ranks[1]) and len(ranks[0]) == 1
    for name_ in ranks[0]:
        assert torch.equal(ranks[0][name_], ranks[1][name_])
    fresh = demo_cfg(name, tmp_path / 'fresh')
    fresh_runner = Runner.from_cfg(fresh)
    fresh_runner.call_hook('before_train')  # memories as built, before any update
    (owner,) = [h for h in fresh_runner.hooks if type(h).__name__ == 'CRDMemoryBankHook']
    assert not torch.equal(next(iter(owner.banks.values())).fingerprint(), ranks[0][name_])


@pytest.mark.slow
def test_exported_student_loads_in_mmseg_and_segments_as_the_distillers_student(tmp_path):
    """convert_to_student on the PixelCRD demo: mmseg's init_model loads it, same masks."""
    from mmseg.apis import inference_model, init_model

    from crd_mm.utils.export import export_student

    cfg = demo_cfg('cwd_pixel_crd.py', tmp_path, iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    config_path = osp.join(cfg.work_dir, 'distill.py')
    cfg.dump(config_path)
    out = tmp_path / 'student'
    student_cfg, student_ckpt = export_student(
        Config.fromfile(config_path), osp.join(cfg.work_dir, 'iter_2.pth'), str(out)
    )
    model = init_model(student_cfg, student_ckpt, device='cpu')
    checkpoint = torch.load(student_ckpt, weights_only=True)
    assert set(checkpoint['state_dict']) == set(model.state_dict())

    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    exported = inference_model(model, image).pred_sem_seg.data
    distiller_student = runner.model.architecture
    distiller_student.cfg = model.cfg  # inference_model reads the test pipeline from cfg
    expected = inference_model(distiller_student, image).pred_sem_seg.data
    assert torch.equal(exported, expected)
