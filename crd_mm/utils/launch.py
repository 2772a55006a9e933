"""What tools/train.py and tools/test.py share, and distributed launch on machines without CUDA.

Both tools take the same launcher flags and ``--cfg-options``, choose the work
directory the same way (command line, else the config's ``work_dir``, else
``./work_dirs/<config name>``), fill the same dataloader defaults and build
the config's runner; the helpers below do each once.

mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` and its default
model wrapper passes ``device_ids=[LOCAL_RANK]`` to DistributedDataParallel, so
``--launcher pytorch`` fails on CPU-only machines. ``setup_cpu_distributed``
initialises a gloo process group before the Runner is built (the Runner then
skips its own ``init_dist``) and makes the wrapper keep the model on the CPU.
On CUDA machines it does nothing, leaving mmengine's NCCL path untouched.
"""

import argparse
import datetime
import os
import subprocess
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import MODEL_WRAPPERS, RUNNERS
from mmengine.runner import Runner
from torch.nn.parallel import DistributedDataParallel

# Environment variables each launcher sets, as (rank, world size, local rank).
_LAUNCHER_ENV = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID'),
    'mpi': ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK'),
}


def _export_torch_env(launcher: str) -> None:
    """Translate a launcher's variables into torch's ``env://`` variables."""
    rank_key, size_key, local_key = _LAUNCHER_ENV[launcher]
    os.environ['RANK'] = os.environ[rank_key]
    os.environ['WORLD_SIZE'] = os.environ[size_key]
    os.environ['LOCAL_RANK'] = os.environ.get(local_key, '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        if launcher != 'slurm':
            raise KeyError('The environment variable MASTER_ADDR is not set')
        # The first host of the allocation hosts the rendezvous store.
        nodes = subprocess.check_output(
            ['scontrol', 'show', 'hostname', os.environ['SLURM_NODELIST']]
        )
        os.environ['MASTER_ADDR'] = nodes.decode().split()[0]


def parse_launcher_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the launcher flags shared by the tools, parse, and export LOCAL_RANK.

    torch.distributed.launch passes ``--local-rank`` on torch >= 2.0 and
    ``--local_rank`` before; both are accepted.
    """
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def add_cfg_options_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """Add ``--cfg-options key=value ...``, which overrides config settings after loading.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        example (str): A ``key=value`` pair shown in the help text.
    """
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help=f'override config settings with key=value pairs, e.g. {example} or '
        'key="[a,b]"; no white space allowed',
    )


def set_work_dir(cfg: Config, work_dir: Optional[str], config_path: str) -> None:
    """Set ``cfg.work_dir``: ``work_dir`` if given, else the config's, else ./work_dirs/<name>.

    Args:
        cfg (Config): The loaded config, updated in place.
        work_dir (str, optional): The tool's ``--work-dir``.
        config_path (str): The config file; its name without extension names
            the default directory.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join(
            './work_dirs', os.path.splitext(os.path.basename(config_path))[0]
        )


def set_dataloader_defaults(
    cfg: Config,
    fields: Sequence[str],
    pin_memory: bool = True,
    persistent_workers: Optional[bool] = True,
) -> None:
    """Give the dataloaders in ``fields`` mmpretrain's tool defaults, under the config's own values.

    Every loader gets ``collate_fn=default_collate`` unless it names one.

    Args:
        cfg (Config): The loaded config, updated in place; absent or None
            loaders are skipped.
        fields (Sequence[str]): The loader keys, e.g. ``('test_dataloader',)``.
        pin_memory (bool): True makes pinned memory the default; False turns
            it off everywhere (``--no-pin-memory``). Defaults to True.
        persistent_workers (bool, optional): True makes persistent workers the
            default of loaders that have workers (torch rejects them with
            ``num_workers=0``); False turns them off everywhere
            (``--no-persistent-workers``); None leaves the config's setting.
            Defaults to True.
    """
    for field in fields:
        if cfg.get(field) is None:
            continue
        loader_cfg = ConfigDict(pin_memory=True, collate_fn=dict(type='default_collate'))
        if persistent_workers and cfg[field].get('num_workers', 0) > 0:
            loader_cfg.persistent_workers = True
        loader_cfg.update(cfg[field])
        if not pin_memory:
            loader_cfg.pin_memory = False
        if persistent_workers is False:
            loader_cfg.persistent_workers = False
        cfg[field] = loader_cfg


def build_runner(cfg: Config) -> Runner:
    """The runner of ``cfg``: its ``runner_type`` from the RUNNERS registry, else mmengine's."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Prepare ``cfg`` and ``torch.distributed`` for a CPU-only launch.

    Args:
        cfg (Config): The config the Runner will be built from; updated in
            place (``env_cfg.dist_cfg.backend`` and ``model_wrapper_cfg``).
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'.

    Returns:
        bool: True if the gloo process group was set up here, False when
        nothing was needed (no launcher, or CUDA is available).
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher not in _LAUNCHER_ENV:
        raise ValueError(f'Invalid launcher type: {launcher}')

    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'

    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False),
        )
    else:
        # The Runner gives DDP subclasses ``device_ids=[LOCAL_RANK]`` unless
        # the config names them, and DDP rejects device ids for CPU modules.
        wrapper_type = wrapper_cfg.get('type', 'MMDistributedDataParallel')
        if isinstance(wrapper_type, str):
            wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
        if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
            wrapper_cfg.setdefault('device_ids', None)

    if not dist.is_initialized():
        _export_torch_env(launcher)
        kwargs = {}
        timeout = cfg.env_cfg.dist_cfg.get('timeout')
        if timeout is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=timeout)
        dist.init_process_group(
            backend='gloo',
            init_method='env://',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs,
        )
    return True


def teardown_distributed() -> None:
    """Wait for every rank, then destroy the process group.

    mmengine never destroys it; a gloo group left to interpreter shutdown can
    abort a rank ('terminate called without an active exception') after a
    run that otherwise succeeded.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
