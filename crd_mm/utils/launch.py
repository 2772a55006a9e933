"""Distributed launch on machines without CUDA.

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

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.registry import MODEL_WRAPPERS
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
