"""Real CPU runs of tools/train.py, tools/test.py and the torchrun scripts.

Every test runs on the configs in ``CONFIG_BUILDERS``; each builder, called
as ``builder(root, make_imagefolder)``, writes its data and config under
``root`` and returns the config path, so more configs
(demo, CRD distillers) join by adding a builder. The configs must train with
``train_cfg=dict(by_epoch=False, max_iters=2, val_interval=2)``, save a
checkpoint every 2 iterations and have a visualization hook in
``default_hooks`` (for ``--show-dir``); see ``write_tiny_cls_config``.
"""

import importlib.util
import json
import os
import os.path as osp
import shutil
import sys

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Keep every run on the CPU (gloo for distributed runs), GPU or not.
CPU_ENV = {'CUDA_VISIBLE_DEVICES': ''}

TINY_CLS_CONFIG = """\
default_scope = 'mmpretrain'
custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=64,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
data_preprocessor = dict(
    num_classes=2, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True)
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset = dict(type='CustomDataset', data_root={data_root!r}, pipeline=pipeline)
train_dataloader = dict(
    batch_size=2, num_workers=0, dataset=dataset,
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=4, num_workers=0, dataset=dataset,
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(by_epoch=False, max_iters=2, val_interval=2)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=2)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    visualization=dict(type='VisualizationHook', enable=False))
visualizer = dict(type='UniversalVisualizer')
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
"""


def write_tiny_cls_config(root, make_imagefolder):
    """A ResNet-18 with 8 base channels on 8 PNGs of 32x32 in 2 classes."""
    data_root = make_imagefolder(osp.join(root, 'data'))
    path = osp.join(root, 'tiny_cls.py')
    with open(path, 'w') as f:
        f.write(TINY_CLS_CONFIG.format(data_root=data_root))
    return path


CONFIG_BUILDERS = {'tiny_cls': write_tiny_cls_config}

TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')


@pytest.fixture(scope='module', params=sorted(CONFIG_BUILDERS))
def config(request, tmp_path_factory, make_imagefolder):
    """Path of a config from ``CONFIG_BUILDERS`` (one per parameter)."""
    root = tmp_path_factory.mktemp(request.param)
    return CONFIG_BUILDERS[request.param](str(root), make_imagefolder)


@pytest.fixture(scope='module')
def trained(config, tmp_path_factory, cmd):
    """Work dir and log of a 2-iteration ``tools/train.py`` run."""
    work_dir = str(tmp_path_factory.mktemp('train'))
    log = cmd.python([TRAIN, config, '--work-dir', work_dir, '--local-rank', '0'], env=CPU_ENV)
    return work_dir, log


def test_train_writes_checkpoint(trained):
    work_dir, log = trained
    assert 'Distributed training: False' in log
    assert 'Saving checkpoint at 2 iterations' in log
    assert 'accuracy/top1' in log  # validation ran at iteration 2
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_2.pth')


def test_test_reports_accuracy(config, trained, tmp_path, cmd):
    work_dir, _ = trained
    out, vis = tmp_path / 'metrics.json', tmp_path / 'vis'
    log = cmd.python(
        [
            TEST,
            config,
            osp.join(work_dir, 'iter_2.pth'),
            '--work-dir',
            tmp_path / 'test',
            '--out',
            out,
            '--out-item',
            'metrics',
            '--show-dir',
            vis,
            '--interval',
            '4',
            '--local_rank',
            '0',
        ],
        env=CPU_ENV,
    )
    assert 'Load checkpoint from' in log
    assert '(test)' in log and 'accuracy/top1' in log
    metrics = json.loads(out.read_text())
    assert 0 <= metrics['accuracy/top1'] <= 100
    assert len(list(vis.glob('*.png'))) > 0  # a drawing every 4th image


def test_resume_continues(config, trained, tmp_path, cmd):
    """``--resume`` picks the last checkpoint in the work dir and training
    goes on from iteration 2 to 4."""
    # A work dir as an interrupted run leaves it; `last_checkpoint` holds an
    # absolute path, so it is rewritten for the copy.
    new_dir = tmp_path / 'resumed'
    new_dir.mkdir()
    shutil.copy(osp.join(trained[0], 'iter_2.pth'), new_dir)
    (new_dir / 'last_checkpoint').write_text(str(new_dir / 'iter_2.pth'))
    log = cmd.python(
        [
            TRAIN,
            config,
            '--work-dir',
            new_dir,
            '--resume',
            '--no-validate',
            '--cfg-options',
            'train_cfg.max_iters=4',
        ],
        env=CPU_ENV,
    )
    assert f'Load checkpoint from {new_dir / "iter_2.pth"}' in log
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'Saving checkpoint at 2 iterations' not in log
    assert 'Saving checkpoint at 4 iterations' in log
    assert (new_dir / 'iter_4.pth').is_file()


def test_dist_train_two_processes(config, trained, tmp_path, cmd, free_port):
    """``dist_train.sh CONFIG 2`` on 2 gloo processes, resuming from a given
    checkpoint (``--resume PATH``) from iteration 2 to 4."""
    ckpt = osp.join(trained[0], 'iter_2.pth')
    work_dir = tmp_path / 'dist'
    log = cmd.run(
        [
            'bash',
            DIST_TRAIN,
            config,
            '2',
            '--work-dir',
            work_dir,
            '--resume',
            ckpt,
            '--cfg-options',
            'train_cfg.max_iters=4',
        ],
        env={**CPU_ENV, 'PORT': str(free_port)},
        timeout=150,
    )
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert f'Load checkpoint from {ckpt}' in log
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'Saving checkpoint at 4 iterations' in log
    assert (work_dir / 'iter_4.pth').is_file()


def test_two_node_launch(config, tmp_path, cmd, free_port):
    """Two ``dist_train.sh`` calls, one per simulated node, train together."""
    work_dir = tmp_path / 'two_nodes'
    args = ['bash', DIST_TRAIN, config, '1', '--work-dir', work_dir]
    node_env = {**CPU_ENV, 'NNODES': '2', 'MASTER_ADDR': '127.0.0.1', 'PORT': str(free_port)}
    nodes = [cmd.start(args, env={**node_env, 'NODE_RANK': str(rank)}) for rank in (0, 1)]
    logs = [cmd.wait(node, timeout=150) for node in nodes]
    assert 'GPU number: 2' in logs[0]
    assert 'Saving checkpoint at 2 iterations' in logs[0]
    assert (work_dir / 'iter_2.pth').is_file()


def load_tool(name):
    """Import tools/<name>.py as a module (the tools are scripts)."""
    spec = importlib.util.spec_from_file_location(
        f'crd_mm_tool_{name}', osp.join(REPO_ROOT, 'tools', f'{name}.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('tool', ['train', 'test'])
@pytest.mark.parametrize('flag', ['--local-rank', '--local_rank'])
def test_local_rank_spellings(tool, flag, monkeypatch):
    """Both spellings parse; LOCAL_RANK is set unless the launcher set it."""
    parse_args = load_tool(tool).parse_args
    argv = [tool, 'cfg.py'] + (['ckpt.pth'] if tool == 'test' else [])
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    monkeypatch.setattr(sys, 'argv', argv + [flag, '3'])
    assert parse_args().local_rank == 3
    assert os.environ['LOCAL_RANK'] == '3'
    monkeypatch.setenv('LOCAL_RANK', '1')
    parse_args()
    assert os.environ['LOCAL_RANK'] == '1'


@pytest.mark.skipif(torch.cuda.is_available(), reason='the gloo set-up is for CPU machines')
def test_setup_cpu_distributed(monkeypatch, free_port):
    """Gloo group from torchrun's variables; DDP kept off device ids."""
    from crd_mm.utils import setup_cpu_distributed

    cfg = Config(dict(model=dict(type='Net')))
    assert not setup_cpu_distributed(cfg, 'none')
    assert 'model_wrapper_cfg' not in cfg and 'env_cfg' not in cfg

    for key, value in dict(
        RANK='0',
        WORLD_SIZE='1',
        LOCAL_RANK='0',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port),
    ).items():
        monkeypatch.setenv(key, value)
    own = Config(
        dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', find_unused_parameters=True))
    )
    try:
        assert setup_cpu_distributed(cfg, 'pytorch')
        assert dist.get_backend() == 'gloo' and dist.get_world_size() == 1
        # Already initialised: the config is still prepared.
        assert setup_cpu_distributed(own, 'pytorch')
    finally:
        dist.destroy_process_group()
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        device_ids=None,
        broadcast_buffers=False,
        find_unused_parameters=False,
    )
    assert own.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel', find_unused_parameters=True, device_ids=None
    )
