"""The pinned stack on current PyTorch: imports, mmcv ops, and checkpoints with weights_only."""

import copy
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.hub import get_config
from mmengine.runner import Runner
from tiny_configs import image_folder_loader, tiny_classifier

import crd_mm
from crd_mm import compat


def test_crd_mm_imports_and_applies_the_patches_this_torch_needs():
    assert crd_mm.__version__
    assert compat.QUANTIZATION_MODULE in compat.APPLIED_PATCHES
    assert 'torch.serialization.safe_globals' in compat.APPLIED_PATCHES
    assert 'mmengine.runner.save_checkpoint' in compat.APPLIED_PATCHES
    assert 'mmengine.hooks.CheckpointHook._save_checkpoint_with_step' in compat.APPLIED_PATCHES


def test_mmrazor_quantization_stand_in_explains_itself():
    from mmrazor.structures.quantization import BackendConfigs, QConfigHandler

    with pytest.raises(ImportError, match='quantization is unavailable on torch'):
        QConfigHandler()
    with pytest.raises(ImportError, match='Distillation does not need it'):
        BackendConfigs['native']


def test_openmmlab_registries_are_complete():
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.utils import register_all_modules as register_mmdet
    from mmpretrain.registry import MODELS as CLS_MODELS
    from mmpretrain.utils import register_all_modules as register_mmpretrain
    from mmrazor.registry import MODELS as RAZOR_MODELS
    from mmrazor.registry import TASK_UTILS as RAZOR_TASK_UTILS
    from mmrazor.utils import register_all_modules as register_mmrazor

    register_mmpretrain(False)
    register_mmdet(False)
    register_mmrazor(False)
    for name in ('ImageClassifier', 'ResNet', 'LinearClsHead', 'CrossEntropyLoss'):
        assert CLS_MODELS.get(name) is not None, name
    for name in ('RetinaNet', 'FasterRCNN', 'FPN', 'StandardRoIHead'):
        assert DET_MODELS.get(name) is not None, name
    for name in (
        'SingleTeacherDistill',
        'ConfigurableDistiller',
        'KLDivergence',
        'PKDLoss',
        'ChannelWiseDivergence',
    ):
        assert RAZOR_MODELS.get(name) is not None, name
    assert RAZOR_TASK_UTILS.get('ModuleOutputsRecorder') is not None


@pytest.mark.parametrize(
    'config',
    [
        'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
        'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    ],
)
def test_mmdet_detectors_train_and_predict_with_mmcv_ops(config):
    """Built from mmdet's own configs: needs mmcv's compiled ops (nms, RoIAlign)."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData

    register_all_modules(True)
    cfg = get_config(config)
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.depth = 18  # small and fast, same ops
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    inputs = [torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8) for _ in range(2)]
    samples = []
    for _ in range(2):
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(128, 160),
                ori_shape=(128, 160),
                scale_factor=(1.0, 1.0),
                pad_shape=(128, 160),
                batch_input_shape=(128, 160),
            )
        )
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 20.0, 80.0, 100.0]]), labels=torch.tensor([3])
        )
        samples.append(sample)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    total = sum(
        v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
        for k, v in losses.items()
        if 'loss' in k
    )
    total.backward()
    assert torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=False)
        results = model(**data, mode='predict')
    assert len(results) == 2 and results[0].pred_instances.bboxes.shape[1] == 4


def classifier_config(data_root, work_dir, max_epochs):
    return Config(
        dict(
            default_scope='mmpretrain',
            custom_imports=dict(imports=['crd_mm'], allow_failed_imports=False),
            work_dir=str(work_dir),
            model=dict(
                tiny_classifier(8), data_preprocessor=dict(mean=[127.5] * 3, std=[127.5] * 3)
            ),
            train_dataloader=image_folder_loader(data_root),
            train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
            randomness=dict(seed=0),
            log_level='WARNING',
        )
    )


class ResumeProbe(Hook):
    """Captures the runner's state at ``before_train``, which runs right after a resume."""

    def before_train(self, runner):
        self.state = dict(
            iter=runner.iter,
            epoch=runner.epoch,
            optim=copy.deepcopy(runner.optim_wrapper.state_dict()),
            loss=runner.message_hub.get_scalar('train/loss').data[0].copy(),
        )


def test_runner_resumes_iteration_optimizer_and_message_hub(imagefolder, tmp_path):
    first = Runner.from_cfg(classifier_config(imagefolder, tmp_path / 'work', max_epochs=1))
    first.train()
    # runners built within the same second share a message hub: copy the history now
    first_losses = first.message_hub.get_scalar('train/loss').data[0].copy()
    cfg = classifier_config(imagefolder, tmp_path / 'work', max_epochs=2)
    cfg.resume, cfg.load_from = True, str(tmp_path / 'work' / 'epoch_1.pth')
    second = Runner.from_cfg(cfg)
    probe = ResumeProbe()
    second.register_hook(probe)
    second.train()
    resumed = probe.state
    assert resumed['iter'] == first.iter == 2 and resumed['epoch'] == 1
    saved = first.optim_wrapper.state_dict()['state']
    for key, value in saved.items():
        assert torch.equal(
            resumed['optim']['state'][key]['momentum_buffer'], value['momentum_buffer']
        )
    assert len(first_losses) == 2 and (resumed['loss'] == first_losses).all()
    assert second.iter == 4


class _Hostile:
    """Pickles into a call of os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f'touch {self.marker}',)


class _HostileGetattr:
    """Pickles into getattr(codecs.encode, '__globals__'): what a plain getattr allow-list opens."""

    def __reduce__(self):
        import codecs

        return getattr, (codecs.encode, '__globals__')


@pytest.mark.parametrize('payload', ['system', 'getattr'])
def test_checkpoint_with_foreign_object_is_refused_and_never_runs(tmp_path, payload):
    from mmengine.runner import load_checkpoint

    marker = tmp_path / 'pwned'
    evil = _Hostile(marker) if payload == 'system' else _HostileGetattr()
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=dict(payload=evil)), path)
    with pytest.raises(pickle.UnpicklingError, match='system|__globals__'):
        load_checkpoint(torch.nn.Linear(1, 1), str(path))
    assert not marker.exists()


ATOMIC_SAVE_SCRIPT = """
import resource, signal, sys, torch
import crd_mm  # noqa: F401
from mmengine.runner import Runner
from mmengine.runner.checkpoint import save_checkpoint
path = sys.argv[1]
save_checkpoint({'weights': torch.zeros(10)}, path)  # a complete, small previous checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # the disk "fills up" after 1 MB
try:
    save_checkpoint({'weights': torch.zeros(1 << 20)}, path)  # 4 MB: the write fails midway
except OSError as error:
    print('save failed:', error)
"""


def test_a_failed_checkpoint_write_leaves_the_previous_file_intact(tmp_path, cmd):
    path = tmp_path / 'epoch_1.pth'
    out = cmd.python(['-c', ATOMIC_SAVE_SCRIPT, str(path)])
    assert 'save failed' in out
    assert torch.load(path)['weights'].shape == (10,)  # loads: not truncated, still the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']
