"""Compatibility patches that make the pinned OpenMMLab stack work on current PyTorch.

This is the only place in crd_mm that patches third-party modules. Each patch
checks whether the installed versions need it, applies itself at most once,
and is applied when ``crd_mm`` is imported (configs do that through
``custom_imports``). ``APPLIED_PATCHES`` lists what was applied in this process.
"""
import codecs
import functools
import io
import os
import sys
import types

import numpy as np
import torch

APPLIED_PATCHES = []

QUANTIZATION_MODULE = 'mmrazor.structures.quantization'


def _quantization_unavailable(*args, **kwargs):
    """Stands in for mmrazor's quantization structures on torch versions they do not support."""
    raise ImportError(
        f'mmrazor 1.0.0 quantization is unavailable on torch {torch.__version__}: '
        'crd_mm replaces mmrazor.structures.quantization with a stand-in because its '
        'torch.ao backend configs do not import on torch 2.x. Distillation does not '
        'need it; for quantization use torch 1.13.')


class _UnavailableMapping(dict):
    """``BackendConfigs`` stand-in: any lookup explains why quantization is unavailable."""

    def __getitem__(self, key):
        _quantization_unavailable()


def patch_mmrazor_quantization():
    """mmrazor 1.0.0 does not import on torch 2.x (open-mmlab/mmrazor: backend configs use removed torch.ao fusers).

    Its ``structures.quantization`` package calls ``reverse_sequential_wrapper2``
    and friends at import time; they are gone from torch.ao. Distillation never
    uses quantization, so a stand-in module is installed before mmrazor is
    imported; using quantization then raises a clear ImportError.
    """
    from torch.ao.quantization import fuser_method_mappings
    if hasattr(fuser_method_mappings, 'reverse_sequential_wrapper2'):
        return  # torch <= 1.13: mmrazor's own module works
    if QUANTIZATION_MODULE in sys.modules:
        return  # already replaced: on torch 2.x the real module cannot have been imported
    stub = types.ModuleType(QUANTIZATION_MODULE)
    stub.__doc__ = 'Stand-in installed by crd_mm.compat: quantization needs torch 1.13.'
    stub.BackendConfigs = _UnavailableMapping()
    stub.QConfigHandler = stub.QSchemeHandler = _quantization_unavailable
    stub.__all__ = ['BackendConfigs', 'QConfigHandler', 'QSchemeHandler']
    sys.modules[QUANTIZATION_MODULE] = stub
    APPLIED_PATCHES.append(QUANTIZATION_MODULE)


def _numpy_checkpoint_globals():
    """numpy objects mmengine stores in checkpoint ``meta`` and message-hub state."""
    core = np._core if hasattr(np, '_core') else np.core  # numpy 2 renamed np.core
    multiarray = core.multiarray
    dtype_classes = {type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDGSUVOMm'}
    return [(multiarray._reconstruct, f'{multiarray.__name__}._reconstruct'),
            (multiarray.scalar, f'{multiarray.__name__}.scalar'),
            np.ndarray, np.dtype, *dtype_classes]


def _history_buffer_getattr(obj, name):
    """``getattr`` as seen by the unpickler: only HistoryBuffer's statistics methods.

    pickle stores a method of a class as ``getattr(HistoryBuffer, 'mean')``; a
    plain ``builtins.getattr`` on the allow-list would let a hostile file reach
    any attribute of any allowed object, so only these lookups are answered.
    """
    from mmengine.logging import HistoryBuffer
    statistics = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in statistics:
        return getattr(HistoryBuffer, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); crd_mm only allows '
        'HistoryBuffer statistics methods. The file was not written by mmengine, or '
        'it references code that weights_only loading refuses to run.')


def patch_checkpoint_allow_list():
    """mmengine checkpoints fail to load on torch >= 2.6 (pytorch#weights_only default; mmengine writes HistoryBuffer/numpy).

    torch 2.6 made ``torch.load(weights_only=True)`` the default. Instead of turning
    it off, exactly the classes mmengine writes are allow-listed, so ``resume`` and
    ``load_from`` work while any other pickled object is still refused.
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return  # torch < 2.4 loads with weights_only=False by default
    from mmengine.logging import HistoryBuffer
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        (codecs.encode, '_codecs.encode'),
        (_history_buffer_getattr, 'builtins.getattr'),
        *_numpy_checkpoint_globals(),
    ])
    APPLIED_PATCHES.append('torch.serialization.safe_globals')


def _fsync_directory(path):
    """Persist the directory entries of ``path`` (a rename is durable only once its directory is fsynced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def patch_atomic_checkpoint_save():
    """mmengine writes checkpoints in place (LocalBackend.put opens the target and writes), so a crash or a full disk mid-write leaves a truncated file.

    Local checkpoints are serialised in memory (as mmengine does), written to
    ``<name>.partial``, which is fsynced, renamed over the target (``os.replace``
    is atomic on POSIX), and then the directory is fsynced: the path holds
    either the previous complete file or the new one, also after a power cut.
    Remote backends (``s3://``, ``pavi://``, ...) are left to mmengine. A run
    killed mid-save leaves its ``.partial`` file behind; the next save of that
    name overwrites it.
    """
    import mmengine.runner as runner_package
    from mmengine.runner import checkpoint as checkpoint_module
    from mmengine.runner import runner as runner_module
    original = checkpoint_module.save_checkpoint
    if getattr(runner_module.save_checkpoint, 'crd_mm_atomic', False):
        return

    @functools.wraps(original)
    def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
        if '://' in str(filename) or file_client_args is not None or backend_args is not None:
            return original(checkpoint, filename, file_client_args, backend_args)
        directory = os.path.dirname(os.path.abspath(filename))
        os.makedirs(directory, exist_ok=True)
        partial = f'{filename}.partial'
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialised first: a failed write then raises a plain OSError
        try:
            with open(partial, 'wb') as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, filename)
            _fsync_directory(directory)
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    save_checkpoint.crd_mm_atomic = True
    checkpoint_module.save_checkpoint = runner_module.save_checkpoint = save_checkpoint
    runner_package.save_checkpoint = save_checkpoint  # `from mmengine.runner import save_checkpoint` (CheckpointHook)
    APPLIED_PATCHES.append('mmengine.runner.save_checkpoint')


def patch_keep_previous_checkpoint_until_saved():
    """mmengine's CheckpointHook deletes the oldest checkpoint before writing the new one, so with max_keep_ckpts=1 a crash mid-save leaves none.

    The hook's own bookkeeping runs unchanged; only the files it removes are
    removed after the new checkpoint has been saved (not at all if saving fails).
    """
    from mmengine.hooks import CheckpointHook
    original = CheckpointHook._save_checkpoint_with_step
    if getattr(original, 'crd_mm_keeps_previous', False):
        return

    @functools.wraps(original)
    def _save_checkpoint_with_step(self, runner, step, meta):
        backend, outdated = self.file_backend, []
        backend.remove = outdated.append  # shadows LocalBackend.remove during the save
        try:
            original(self, runner, step, meta)
        finally:
            del backend.remove
        for path in outdated:
            backend.remove(path)

    _save_checkpoint_with_step.crd_mm_keeps_previous = True
    CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step
    APPLIED_PATCHES.append('mmengine.hooks.CheckpointHook._save_checkpoint_with_step')


patch_mmrazor_quantization()
patch_checkpoint_allow_list()
patch_atomic_checkpoint_save()
patch_keep_previous_checkpoint_until_saved()
