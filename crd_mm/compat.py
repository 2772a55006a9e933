"""Compatibility patches that make the pinned OpenMMLab stack work on current PyTorch.

This is the only place in crd_mm that patches third-party modules. Each patch
checks whether the installed versions need it, applies itself at most once,
and is applied when ``crd_mm`` is imported (configs do that through
``custom_imports``). ``APPLIED_PATCHES`` lists what was applied in this process.
"""

import builtins
import codecs
import difflib
import functools
import io
import locale
import os
import os.path as osp
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
        'need it; for quantization use torch 1.13.'
    )


class _UnavailableMapping(dict):
    """``BackendConfigs`` stand-in: any lookup explains why quantization is unavailable."""

    def __getitem__(self, key):
        _quantization_unavailable()


def patch_mmrazor_quantization():
    """mmrazor 1.0.0 does not import on torch 2.x: its backend configs use removed torch.ao fusers.

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
    return [
        (multiarray._reconstruct, f'{multiarray.__name__}._reconstruct'),
        (multiarray.scalar, f'{multiarray.__name__}.scalar'),
        np.ndarray,
        np.dtype,
        *dtype_classes,
    ]


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
        'it references code that weights_only loading refuses to run.'
    )


def patch_checkpoint_allow_list():
    """mmengine checkpoints fail to load on torch >= 2.6 (``weights_only`` by default).

    mmengine writes HistoryBuffer and numpy objects into every checkpoint's ``meta``.

    torch 2.6 made ``torch.load(weights_only=True)`` the default. Instead of turning
    it off, exactly the classes mmengine writes are allow-listed, so ``resume`` and
    ``load_from`` work while any other pickled object is still refused.
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return  # torch < 2.4 loads with weights_only=False by default
    from mmengine.logging import HistoryBuffer

    torch.serialization.add_safe_globals(
        [
            HistoryBuffer,
            (codecs.encode, '_codecs.encode'),
            (_history_buffer_getattr, 'builtins.getattr'),
            *_numpy_checkpoint_globals(),
        ]
    )
    APPLIED_PATCHES.append('torch.serialization.safe_globals')


def _fsync_directory(path):
    """Persist the entries of directory ``path``: a rename is durable only once it is fsynced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path, data):
    """Replace the file ``path`` with ``data`` (bytes) so that it is never seen half written.

    ``data`` goes to ``<path>.partial`` in the same directory, which is
    fsynced, renamed over ``path`` (``os.replace`` is atomic on POSIX), and
    then the directory is fsynced: ``path`` holds either its previous complete
    content or the new one, also after a SIGKILL or a power cut. A process
    killed mid-write leaves its ``.partial`` file behind; the next write of
    that path overwrites it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    partial = f'{path}.partial'
    try:
        with open(partial, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def patch_atomic_checkpoint_save():
    """mmengine writes checkpoints in place (LocalBackend.put opens the target and writes).

    A crash or a full disk mid-write would leave a truncated file. Local
    checkpoints are serialised in memory (as mmengine does) and written with
    :func:`_write_atomically`. Remote backends (``s3://``, ``pavi://``, ...)
    are left to mmengine.
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
        buffer = io.BytesIO()
        # serialised first: a failed write then raises a plain OSError
        torch.save(checkpoint, buffer)
        _write_atomically(filename, buffer.getbuffer())

    save_checkpoint.crd_mm_atomic = True
    checkpoint_module.save_checkpoint = runner_module.save_checkpoint = save_checkpoint
    # `from mmengine.runner import save_checkpoint` (CheckpointHook)
    runner_package.save_checkpoint = save_checkpoint
    APPLIED_PATCHES.append('mmengine.runner.save_checkpoint')


class _AtomicTextFile(io.StringIO):
    """A text file opened for writing whose content replaces ``path`` atomically on close.

    Nothing touches the disk until the ``with`` block ends without an error;
    then the text is written with :func:`_write_atomically`. On an error the
    previous file stays as it was.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path

    def close(self):
        if not self.closed:
            data = self.getvalue().encode(locale.getpreferredencoding(False))
            super().close()
            _write_atomically(self.path, data)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            super().close()  # discarded


def patch_atomic_last_checkpoint():
    """mmengine's CheckpointHook rewrites ``<work_dir>/last_checkpoint`` in place.

    ``--resume`` (``find_latest_checkpoint``) reads the path it holds; a run
    killed while writing it leaves it empty or holding half a path, and the
    next resume fails. The hook's module writes it with ``open(save_file,
    'w')``: in that module only, ``open`` of a file named ``last_checkpoint``
    for writing returns an :class:`_AtomicTextFile`; every other call goes to
    the built-in ``open``.
    """
    from mmengine.hooks import checkpoint_hook

    if getattr(vars(checkpoint_hook).get('open'), 'crd_mm_atomic', False):
        return

    def open_(file, mode='r', *args, **kwargs):
        if mode == 'w' and osp.basename(str(file)) == 'last_checkpoint' and not args and not kwargs:
            return _AtomicTextFile(file)
        return builtins.open(file, mode, *args, **kwargs)

    open_.crd_mm_atomic = True
    checkpoint_hook.open = open_
    APPLIED_PATCHES.append('mmengine.hooks.checkpoint_hook.open(last_checkpoint)')


def _remove_after_saving(method):
    """Wrap a CheckpointHook method so that files it removes go only once its save succeeded.

    During the call the hook's file backend's ``remove`` and ``rmtree`` only
    note the paths; afterwards the noted paths are removed, except those the
    hook still points to (its last checkpoint and best checkpoints: with a
    fixed ``filename_tmpl`` the "outdated" file is the one just saved). If
    the call raises, nothing is removed. A nested call (``_save_best_checkpoint``
    calls ``_save_checkpoint_with_step``) leaves the removals to the outer one.
    """

    @functools.wraps(method)
    def wrapper(self, runner, *args, **kwargs):
        backend = getattr(self, 'file_backend', None)  # set in before_train: none in val/test
        if backend is None or 'remove' in vars(backend):  # nested: the outer call removes
            return method(self, runner, *args, **kwargs)
        real = {name: getattr(backend, name) for name in ('remove', 'rmtree')}
        outdated = []
        for name in real:
            setattr(
                backend, name, functools.partial(lambda n, path: outdated.append((n, path)), name)
            )
        try:
            result = method(self, runner, *args, **kwargs)
        finally:
            for name in real:
                delattr(backend, name)
        kept = {self.last_ckpt, getattr(self, 'best_ckpt_path', None)}
        kept.update(getattr(self, 'best_ckpt_path_dict', {}).values())
        for name, path in outdated:
            if path not in kept:
                real[name](path)
        return result

    wrapper.crd_mm_keeps_previous = True
    return wrapper


def patch_keep_previous_checkpoint_until_saved():
    """mmengine's CheckpointHook deletes old checkpoints before it writes the new ones.

    With ``max_keep_ckpts=1`` (``_save_checkpoint_with_step``) the oldest
    checkpoint goes first, and with ``save_best`` (``_save_best_checkpoint``)
    the previous best: a crash mid-save leaves none. The hook's own
    bookkeeping runs unchanged; only the files it removes are removed after
    the new checkpoint has been saved (:func:`_remove_after_saving`).
    """
    from mmengine.hooks import CheckpointHook

    for name in ('_save_checkpoint_with_step', '_save_best_checkpoint'):
        original = getattr(CheckpointHook, name)
        if getattr(original, 'crd_mm_keeps_previous', False):
            continue
        setattr(CheckpointHook, name, _remove_after_saving(original))
        APPLIED_PATCHES.append(f'mmengine.hooks.CheckpointHook.{name}')


CONFIG_SCOPE = 'crd_mm'


def package_configs_dir():
    """The recipes of this crd_mm: the package's ``.mim/configs`` (setup.py ships them there).

    A non-editable install holds a copy, an editable one a link to the checkout's
    ``configs/``; a checkout imported without installing (on ``PYTHONPATH``) has
    no ``.mim`` and uses its ``configs/`` directly.
    """
    package = osp.dirname(osp.abspath(__file__))
    shipped = osp.join(package, '.mim', 'configs')
    checkout = osp.join(osp.dirname(package), 'configs')
    if not osp.isdir(shipped) and osp.isdir(checkout):
        return checkout
    return shipped


def resolve_package_config(relative_path):
    """The file of ``crd_mm::<relative_path>``, or a FileNotFoundError naming the closest ones."""
    root = package_configs_dir()
    path = osp.join(root, relative_path)
    if osp.isfile(path):
        return path
    recipes = [
        osp.relpath(osp.join(d, f), root)
        for d, _, files in os.walk(root, followlinks=True)
        for f in files
        if f.endswith(('.py', '.yaml', '.yml', '.json'))
    ]
    close = difflib.get_close_matches(relative_path, recipes, n=5, cutoff=0.5)
    hint = (
        f'closest recipes: {", ".join(f"{CONFIG_SCOPE}::{c}" for c in close)}'
        if close
        else f'{len(recipes)} recipes are there; paths are relative to that folder, '
        f'e.g. {CONFIG_SCOPE}::crd/cifar100/crd_resnet56_resnet20_cifar100.py'
    )
    raise FileNotFoundError(
        f'{CONFIG_SCOPE}::{relative_path}: no such config in {root} (the recipes '
        f'shipped with the crd_mm imported from {osp.dirname(osp.abspath(__file__))}); {hint}'
    )


def patch_crd_mm_config_scope():
    """mmengine 0.10.7 resolves ``<package>::<path>`` in ``_base_`` only for its own packages.

    It knows only its own list of OpenMMLab packages.

    ``Config._get_cfg_path`` asserts the package is in ``MODULE2PACKAGE``
    ("mmengine does not support to load crd_mm config"), and for the others
    also needs a ``.mim/model-index.yml``. ``crd_mm::<path>`` is resolved
    here to the recipe shipped with the imported crd_mm
    (:func:`package_configs_dir`), inherited as a plain file: no ``_scope_`` is
    set on its variables, because crd_mm registers its modules in mmrazor's,
    mmpretrain's and mmengine's registries and each recipe names its own
    ``default_scope``. mmengine reads ``_base_`` before ``custom_imports``,
    so ``crd_mm`` must be imported before the config is loaded (crd_mm's
    tools do).

    Other packages' ``<package>::<path>`` go to mmengine, once per path and
    process: mmengine re-reads all of a package's metafiles for each of them
    (mmpretrain's 85 YAML files, about 1 s per ``mmpretrain::`` base), and
    the answer depends only on the path (failures are not remembered).
    """
    from mmengine.config import Config

    original = Config._get_cfg_path
    if getattr(original, 'crd_mm_scope', False):
        return
    resolve_external = functools.lru_cache(maxsize=None)(lambda cfg_path: original(cfg_path, None))

    @functools.wraps(original)
    def _get_cfg_path(cfg_path, filename):
        scope, sep, relative_path = cfg_path.partition('::')
        if not sep:
            return original(cfg_path, filename)
        if scope == CONFIG_SCOPE:
            return resolve_package_config(relative_path), None
        return resolve_external(cfg_path)

    _get_cfg_path.crd_mm_scope = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)
    APPLIED_PATCHES.append('mmengine.config.Config._get_cfg_path')


patch_mmrazor_quantization()
patch_checkpoint_allow_list()
patch_atomic_checkpoint_save()
patch_atomic_last_checkpoint()
patch_keep_previous_checkpoint_until_saved()
patch_crd_mm_config_scope()


# ------------------------------------------------- teacher checkpoints (helper H2)
def patch_strict_teacher_checkpoint():
    """mmrazor's ``SingleTeacherDistill`` loads ``teacher_ckpt`` with ``strict=False``.

    A checkpoint of another network then only logs a warning (on rank 0) and
    leaves the layers that do not fit randomly initialised. Its ``__init__``,
    which ``FpnTeacherDistill`` and crd_mm's ``CrossModalDistill`` and
    ``FpnRoITeacherDistill`` inherit, is wrapped: mmrazor builds the algorithm
    without the checkpoint, then
    :func:`crd_mm.utils.teacher_check.load_teacher_checkpoint` loads it into
    the same teacher, raising on every rank for any missing, unexpected or
    wrong-shaped key. The added argument ``teacher_ckpt_strict=False`` loads
    only the tensors that fit and lists the others in a warning.
    """
    import inspect

    from mmrazor.models.algorithms import SingleTeacherDistill

    original = SingleTeacherDistill.__init__
    if getattr(original, 'crd_mm_strict_teacher', False):
        return
    arguments = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args, teacher_ckpt_strict=True, **kwargs):
        bound = arguments.bind(self, *args, **kwargs)
        ckpt = bound.arguments.get('teacher_ckpt')
        bound.arguments['teacher_ckpt'] = None
        original(*bound.args, **bound.kwargs)
        if ckpt:
            from crd_mm.utils.teacher_check import load_teacher_checkpoint

            load_teacher_checkpoint(
                self.teacher,
                ckpt,
                teacher_cfg=bound.arguments['teacher'],
                strict=teacher_ckpt_strict,
            )
            self.teacher._is_init = True  # the runner's init_weights() must not overwrite it

    __init__.crd_mm_strict_teacher = True
    SingleTeacherDistill.__init__ = __init__
    APPLIED_PATCHES.append('mmrazor.models.algorithms.SingleTeacherDistill.__init__')


def mmcls_config_message(cfg_path, filename=None):
    """Why ``mmcls::<path>`` cannot be read here, and what to write instead."""
    from mmengine.config import Config

    relative = cfg_path.partition('::')[2]
    lines = [
        f"{cfg_path!r}: mmcls is not installed. mmrazor 1.0.0's configs were written for mmcls "
        '1.x, which became mmpretrain and is not on PyPI (pip would install the incompatible '
        'mmcls 0.x). Do not install mmcls.'
    ]
    try:
        Config._get_cfg_path(f'mmpretrain::{relative}', None)
    except Exception:  # no twin: only the general advice
        lines.append(
            "  mmpretrain (installed) holds mmcls 1.x's configs: write mmpretrain:: for mmcls:: "
            "and _scope_='mmpretrain' for _scope_='mmcls'."
        )
    else:
        lines.append(
            f"  mmpretrain (installed) has the same config: write 'mmpretrain::{relative}', and "
            "_scope_='mmpretrain' for _scope_='mmcls'."
        )
    parsed = osp.normpath(filename or '').split(os.sep)
    if 'crd' in parsed and 'distill' in parsed:
        lines.append(
            f"  {osp.basename(filename)} is mmrazor's own CRD config: with crd_mm imported, "
            "CRDLoss and CRDConnector are crd_mm's (same names), and mmrazor's CRD data parts "
            '(PackCRDClsInputs, CRDDataset) exist only for mmcls. Keep the plain dataset '
            "(mmpretrain's PackInputs keeps 'sample_idx'), add custom_hooks = "
            "[dict(type='CRDMemoryBankHook')], write CRDLoss's arguments with crd_mm's names "
            '(neg_num -> num_negatives, dim_out -> feat_dim, no sample_n), or start from '
            f'{CONFIG_SCOPE}::crd/cifar100/crd_resnet56_resnet20_cifar100.py (docs/teachers.md).'
        )
    return '\n'.join(lines)


def patch_mmcls_config_hint():
    """``mmcls::`` configs fail with an error that says to write ``mmpretrain::``.

    mmrazor 1.0.0's classification configs name ``mmcls::`` bases and models.
    mmengine answers the bases with "mmcls is not installed, please install
    mmcls manually", and ``mmengine.hub.get_config``/``get_model`` (used by
    ``cfg_path=`` models) runs ``pip install mmcls``, which installs the
    incompatible mmcls 0.x. Both now raise :func:`mmcls_config_message`'s
    advice instead, while mmcls is not importable.
    """
    import importlib.util

    import mmengine.hub
    import mmengine.hub.hub
    from mmengine.config import Config

    def mmcls_missing(cfg_path):
        return (
            isinstance(cfg_path, str)
            and cfg_path.partition('::')[0] == 'mmcls'
            and '::' in cfg_path
            and importlib.util.find_spec('mmcls') is None
        )

    original_path = Config._get_cfg_path
    if not getattr(original_path, 'crd_mm_mmcls_hint', False):

        @functools.wraps(original_path)
        def _get_cfg_path(cfg_path, filename):
            if mmcls_missing(cfg_path):
                raise ModuleNotFoundError(mmcls_config_message(cfg_path, filename))
            return original_path(cfg_path, filename)

        _get_cfg_path.crd_mm_mmcls_hint = True
        Config._get_cfg_path = staticmethod(_get_cfg_path)

    original_get_config = mmengine.hub.hub.get_config
    if not getattr(original_get_config, 'crd_mm_mmcls_hint', False):

        @functools.wraps(original_get_config)
        def get_config(cfg_path, *args, **kwargs):
            if mmcls_missing(cfg_path):
                raise ModuleNotFoundError(mmcls_config_message(cfg_path))
            return original_get_config(cfg_path, *args, **kwargs)

        get_config.crd_mm_mmcls_hint = True
        mmengine.hub.hub.get_config = get_config  # what get_model calls
        mmengine.hub.get_config = get_config
    APPLIED_PATCHES.append('mmengine mmcls:: configs (hint)')


patch_strict_teacher_checkpoint()
patch_mmcls_config_hint()
