"""Shared fixtures: a tiny image-folder dataset, free ports, subprocess runs.

Fixtures:
    imagefolder: path of a tiny classification dataset in mmpretrain's
        ``CustomDataset`` layout: 2 classes of 4 RGB 32x32 PNGs,
        ``<root>/class_<c>/<c>_<i>.png`` (file names unique across classes).
    make_imagefolder: factory ``make_imagefolder(root, num_classes=2,
        per_class=4, size=32, seed=0)`` for other sizes.
    free_port: a TCP port that was free a moment ago (for MASTER_PORT/PORT).
    cmd: a ``CommandRunner`` that runs commands from the repository root with
        the repository on PYTHONPATH and this interpreter's bin/ first on PATH.
"""

import os
import os.path as osp
import signal
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def write_imagefolder(root, num_classes=2, per_class=4, size=32, seed=0):
    """Write ``num_classes * per_class`` PNGs ``root/class_<c>/<c>_<i>.png``.

    Each class has its own mean colour plus noise, so a small network can
    tell the classes apart. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        class_dir = osp.join(root, f'class_{c}')
        os.makedirs(class_dir, exist_ok=True)
        colour = rng.integers(0, 256, size=3)
        for i in range(per_class):
            noise = rng.integers(-40, 41, size=(size, size, 3))
            img = np.clip(colour + noise, 0, 255).astype(np.uint8)
            cv2.imwrite(osp.join(class_dir, f'{c}_{i}.png'), img)
    return str(root)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` where torch sees no CUDA device, saying why (shown by ``-ra``)."""
    gpu_items = [item for item in items if item.get_closest_marker('gpu')]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    reason = (
        f'needs a CUDA GPU: torch {torch.__version__} (CUDA build: {torch.version.cuda}) '
        'sees none; tools/gpu_check.sh runs these on a GPU machine'
    )
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope='session')
def make_imagefolder():
    return write_imagefolder


@pytest.fixture
def imagefolder(tmp_path):
    return write_imagefolder(tmp_path / 'imagefolder')


@pytest.fixture
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class CommandRunner:
    """Run commands the way a user would from the repository root."""

    def env(self, extra=None):
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
        env['PATH'] = os.pathsep.join((osp.dirname(sys.executable), env.get('PATH', '')))
        # one intra-op thread per process: these tiny models gain nothing from
        # more, and several processes share the machine's cores
        env.setdefault('OMP_NUM_THREADS', '1')
        # subprocesses run on the CPU unless a test asks for a GPU explicitly
        # (extra={'CUDA_VISIBLE_DEVICES': '0'}): on a GPU machine mmengine would
        # otherwise bind every rank to cuda:<local_rank>, which one GPU cannot serve
        env['CUDA_VISIBLE_DEVICES'] = ''
        env.update(extra or {})
        return env

    def start(self, cmd, env=None):
        """Start ``cmd`` (a list) in the background; stdout and stderr merged."""
        return subprocess.Popen(
            [str(c) for c in cmd],
            cwd=REPO_ROOT,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def wait(self, proc, timeout=120, check=True):
        """Wait for a started command; return its output.

        With ``check`` a non-zero exit fails the test showing the output's end.
        """
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The command may have children (torchrun's workers): end its
            # whole process group, which start() made for it.
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f'{proc.args} timed out after {timeout}s:\n{out[-6000:]}')
        if check and proc.returncode != 0:
            pytest.fail(f'{proc.args} exited with {proc.returncode}:\n{out[-6000:]}')
        return out

    def run(self, cmd, env=None, timeout=120, check=True):
        """Run ``cmd`` to completion and return its output."""
        return self.wait(self.start(cmd, env), timeout=timeout, check=check)

    def python(self, args, env=None, timeout=120, check=True):
        """Run this interpreter (the venv's python) with ``args``."""
        return self.run([sys.executable, *args], env, timeout, check)


@pytest.fixture(scope='session')
def cmd():
    return CommandRunner()
