"""Stop a distillation run early, and helpfully, when its teacher checkpoint is not on disk.

Without this check a recipe run before its teacher was trained ends, after the
models have been built, in mmengine's bare ``FileNotFoundError: <path> can not
be found.``. :func:`check_teachers` reads the teacher checkpoints a model
config names (``model.teacher_ckpt``, and ``model.teachers.<name>.ckpt`` of
``MultiTeacherDistill``) before anything is built and, for each local one that
is missing, names the config that writes it and the command that trains it.

The producing config is found the way crd_mm's recipes lay checkpoints out:
``tools/train.py`` writes a config's checkpoints to ``work_dirs/<config
name>/`` (or to ``--work-dir``), so the folders of the checkpoint path below
``work_dirs`` are matched against the configs' paths, longest match first
(``work_dirs/demo/teacher/epoch_30.pth`` -> ``configs/demo/teacher.py``,
``work_dirs/resnet56_cifar100/epoch_240.pth`` ->
``configs/cifar100_teachers/resnet56_cifar100.py``). A ``MultiTeacherDistill``
teacher's own ``cfg_path`` names its config directly. Checkpoints given by URL
(``https://...``, mmpretrain's released weights) or on remote storage are not
checked.

A checkpoint that exists but does not fit its teacher's network is the
second check, made when the model is built: :func:`load_teacher_checkpoint`
(used by ``MultiTeacherDistill`` and, through ``crd_mm.compat``, by mmrazor's
``SingleTeacherDistill`` and every algorithm built on it) refuses missing,
unexpected or wrong-shaped keys unless a partial load is asked for.
"""

import logging
import os
import os.path as osp
from collections import OrderedDict
from typing import Iterable, List, Mapping, NamedTuple, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from crd_mm.compat import CONFIG_SCOPE, package_configs_dir, resolve_package_config

CONFIG_SUFFIXES = ('.py', '.yaml', '.yml', '.json')


class TeacherCheckpoint(NamedTuple):
    """A teacher checkpoint named by a model config."""

    key: str  # the --cfg-options key that sets it, e.g. 'model.teacher_ckpt'
    path: str
    cfg_path: Optional[str] = None  # the teacher's own config, where the model names it


class MissingTeacherError(FileNotFoundError):
    """A teacher checkpoint of the config does not exist; the message says how to produce it."""


def teacher_checkpoints(model: dict, prefix: str = 'model') -> List[TeacherCheckpoint]:
    """The teacher checkpoints ``model`` (a model config) names, with their config keys.

    Test-time wrappers (``tta_model`` around the model, as ``tools/test.py
    --tta`` builds it) are looked through via their ``module``.
    """
    if not isinstance(model, dict):
        return []
    found = []
    if model.get('teacher_ckpt'):
        found.append(TeacherCheckpoint(f'{prefix}.teacher_ckpt', model['teacher_ckpt']))
    teachers = model.get('teachers')
    if isinstance(teachers, dict):
        for name, spec in teachers.items():
            if isinstance(spec, dict) and spec.get('ckpt'):
                found.append(
                    TeacherCheckpoint(
                        f'{prefix}.teachers.{name}.ckpt', spec['ckpt'], spec.get('cfg_path')
                    )
                )
    found += teacher_checkpoints(model.get('module'), f'{prefix}.module')
    return found


def _config_roots(config_file: Optional[str]) -> List[str]:
    """Folders searched for teacher configs: the recipe's ``configs`` folder, then crd_mm's own."""
    roots = []
    if config_file:
        parts = osp.abspath(config_file).split(os.sep)
        if 'configs' in parts:
            index = len(parts) - 1 - parts[::-1].index('configs')
            roots.append(os.sep.join(parts[: index + 1]))
    roots.append(package_configs_dir())
    unique = []
    for root in roots:
        if osp.isdir(root) and osp.realpath(root) not in map(osp.realpath, unique):
            unique.append(root)
    return unique


def _recipes(root: str) -> Iterable[str]:
    """Config files under ``root`` that can be trained: no ``_base_`` parts, no ``_*.py`` files."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith('_'))
        for name in sorted(files):
            if name.endswith(CONFIG_SUFFIXES) and not name.startswith('_'):
                yield osp.join(folder, name)


def _run_folders(ckpt: str) -> List[str]:
    """The folders of a checkpoint path that name its run: those below the last ``work_dirs``."""
    folders = osp.normpath(ckpt).split(os.sep)[:-1]
    if 'work_dirs' in folders:
        folders = folders[len(folders) - folders[::-1].index('work_dirs') :]
    return [f for f in folders if f not in ('', '.')]


def find_teacher_config(ckpt: str, roots: Sequence[str]) -> Optional[str]:
    """The config under ``roots`` whose path best matches the run folders of ``ckpt``, or None.

    A config matches when its name is the checkpoint's folder; among those,
    the one whose parent folders also match the most folders above it wins,
    then a Python config over its YAML twin, then the earlier root.
    """
    folders = _run_folders(ckpt)
    if not folders:
        return None
    best, best_rank = None, None
    for order, root in enumerate(roots):
        for path in _recipes(root):
            parts = osp.splitext(osp.relpath(path, root))[0].split(os.sep)
            matched = 0
            while (
                matched < min(len(parts), len(folders))
                and parts[-1 - matched] == folders[-1 - matched]
            ):
                matched += 1
            if matched == 0:
                continue
            rank = (matched, path.endswith('.py'), -order)
            if best_rank is None or rank > best_rank:
                best, best_rank = path, rank
    return best


def _shown(path: str) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute."""
    relative = osp.relpath(osp.abspath(path))
    return osp.abspath(path) if relative.startswith(os.pardir) else relative


def _default_work_dir(config: str) -> str:
    """Where ``tools/train.py config`` writes checkpoints: its ``work_dir`` or work_dirs/<name>."""
    try:
        work_dir = Config.fromfile(config).get('work_dir')
    except Exception:  # a config that does not parse here still names the right command
        work_dir = None
    return work_dir or osp.join('work_dirs', osp.splitext(osp.basename(config))[0])


def _teacher_config(item: TeacherCheckpoint, roots: Sequence[str]) -> Optional[str]:
    cfg_path = item.cfg_path
    if cfg_path:
        scope, sep, relative = cfg_path.partition('::')
        if not sep and osp.isfile(cfg_path):
            return cfg_path
        if sep and scope == CONFIG_SCOPE:
            return resolve_package_config(relative)
    return find_teacher_config(item.path, roots)


def _advice(item: TeacherCheckpoint, roots: Sequence[str], train_tool: str) -> str:
    lines = [f'{item.key} = {item.path!r} does not exist ({osp.abspath(item.path)}).']
    config = _teacher_config(item, roots)
    run_dir = osp.dirname(osp.normpath(item.path)) or os.curdir
    if config is not None:
        command = f'python {_shown(train_tool)} {_shown(config)}'
        if osp.abspath(_default_work_dir(config)) != osp.abspath(run_dir):
            command += f' --work-dir {run_dir}'
        known = item.cfg_path or 'work_dirs' in osp.normpath(item.path).split(os.sep)
        source = (
            'It is written by the teacher config'
            if known
            else 'Its folder is named after the config'
        )
        lines += [f'  {source} {_shown(config)}; train the teacher first:', f'    {command}']
    else:
        lines += [
            f'  No config in {" or ".join(map(_shown, roots))} is named after its folder '
            "(tools/train.py writes a config's checkpoints to work_dirs/<config name>/); "
            'train the teacher with the config it was meant to come from:',
            f'    python {_shown(train_tool)} <teacher config> --work-dir {run_dir}',
        ]
    lines.append(
        f'  or use a teacher checkpoint you have: --cfg-options {item.key}=/path/to/teacher.pth'
    )
    return '\n'.join(lines)


def check_teachers(cfg, train_tool: str = 'tools/train.py', extra_hint: str = '') -> None:
    """Raise :class:`MissingTeacherError` if a local teacher checkpoint of ``cfg.model`` is missing.

    Args:
        cfg (Config): The merged config (``--cfg-options`` applied).
        train_tool (str): The path of ``tools/train.py``, shown in the suggested command
            relative to the current directory when it lies below it.
        extra_hint (str): A line added to the message (``tools/test.py`` says
            how to test a distilled checkpoint without its teacher's own file).
    """
    missing = [
        item
        for item in teacher_checkpoints(cfg.get('model'))
        if '://' not in str(item.path) and not osp.isfile(item.path)
    ]
    if not missing:
        return
    roots = _config_roots(cfg.filename)
    message = [
        f'{len(missing)} teacher checkpoint(s) of {cfg.filename or "the config"} not found; '
        'nothing was built.'
    ]
    message += [_advice(item, roots, train_tool) for item in missing]
    if extra_hint:
        message.append(extra_hint)
    raise MissingTeacherError('\n'.join(message))


# ------------------------------------------------- a checkpoint that does not fit
class TeacherCheckpointMismatchError(ValueError):
    """A teacher checkpoint does not fit the teacher's network; the message lists what differs."""


# config keys left out of a teacher's one-line description: they do not shape its weights
_UNSHAPED_KEYS = ('_scope_', 'init_cfg', 'data_preprocessor', 'loss', 'train_cfg', 'test_cfg')


def describe_model_cfg(cfg, limit: int = 300) -> str:
    """A one-line description of a model config, e.g. ``ImageClassifier(backbone=ResNet(...))``.

    Shows ``cfg_path`` when the model is taken from a config file, else the
    ``type`` of the model and of its parts with their scalar arguments (what
    decides the shapes of its weights), cut at ``limit`` characters.
    """
    if isinstance(cfg, torch.nn.Module):
        return f'a built {type(cfg).__name__}'
    if not isinstance(cfg, Mapping):
        return repr(cfg)
    if cfg.get('cfg_path') and not cfg.get('type'):
        return f'cfg_path={cfg["cfg_path"]!r}'

    def shown(value):
        if isinstance(value, Mapping):
            kind = value.get('type')
            name = getattr(kind, '__name__', kind) or 'dict'
            args = ', '.join(
                f'{key}={shown(item)}'
                for key, item in value.items()
                if key != 'type'
                and key not in _UNSHAPED_KEYS
                and item is not None
                and (
                    isinstance(item, (bool, int, float, str, tuple, list))
                    or (isinstance(item, Mapping) and 'type' in item)
                )
            )
            return f'{name}({args})'
        return repr(value)

    text = shown(cfg)
    return text if len(text) <= limit else text[: limit - 3] + '...'


def _listed(items: Sequence[str], limit: int = 8) -> str:
    more = f', ... ({len(items) - limit} more)' if len(items) > limit else ''
    return ', '.join(items[:limit]) + more


def _checkpoint_origin(ckpt: str) -> str:
    """A line naming the recipe whose folder holds ``ckpt`` (the config that trained it), if any."""
    if '://' in str(ckpt):
        return ''
    config = find_teacher_config(str(ckpt), [package_configs_dir()])
    if config is None:
        return ''
    return (
        f"  The checkpoint's folder is named after {_shown(osp.realpath(config))}: it was probably "
        "trained with that config's model."
    )


def load_teacher_checkpoint(
    teacher: torch.nn.Module,
    ckpt: str,
    *,
    name: str = 'teacher',
    ckpt_key: str = 'model.teacher_ckpt',
    cfg_key: str = 'model.teacher',
    strict_key: str = 'model.teacher_ckpt_strict',
    teacher_cfg=None,
    strict: bool = True,
) -> None:
    """Load ``ckpt`` (path or URL) into ``teacher``; refuse, on every rank, one that does not fit.

    mmengine's ``load_checkpoint`` (which mmrazor's ``SingleTeacherDistill``
    calls with ``strict=False``) only logs missing, unexpected and
    wrong-shaped keys, on rank 0, and leaves those layers randomly
    initialised: the student would then be distilled from a partly random
    teacher without anyone noticing. Here any difference raises
    :class:`TeacherCheckpointMismatchError` naming the keys, the teacher's
    config and the option that allows a partial load. With ``strict=False``
    the tensors that fit are loaded and the others are listed in a warning.
    Only ``num_batches_tracked`` counters may be absent (older checkpoints).

    Args:
        teacher (nn.Module): The built teacher.
        ckpt (str): Its checkpoint: a path or a URL.
        name (str): How the message names the teacher. Defaults to 'teacher'.
        ckpt_key (str): The config key of the checkpoint. Defaults to 'model.teacher_ckpt'.
        cfg_key (str): The config key of the teacher's model. Defaults to 'model.teacher'.
        strict_key (str): The config key that allows a partial load.
            Defaults to 'model.teacher_ckpt_strict'.
        teacher_cfg (dict, optional): The teacher's model config, described in
            the message. Defaults to None (``teacher``'s class is named).
        strict (bool): Refuse any difference. Defaults to True.
    """
    if not isinstance(strict, bool):
        raise TypeError(f'{strict_key} must be True or False, got {strict!r}')
    try:
        checkpoint = CheckpointLoader.load_checkpoint(ckpt, map_location='cpu')
    except FileNotFoundError as err:
        raise FileNotFoundError(f'{name}: checkpoint {ckpt!r} not found ({err})') from err
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise TeacherCheckpointMismatchError(f'{name}: {ckpt!r} holds no state_dict')
    metadata = getattr(state, '_metadata', None)
    state = OrderedDict(
        (k[len('module.') :] if k.startswith('module.') else k, v) for k, v in state.items()
    )
    expected = teacher.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        k
        for k, v in expected.items()
        if k in state and tuple(getattr(state[k], 'shape', ())) != tuple(getattr(v, 'shape', ()))
    ]
    shapes = [
        f'{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(expected[k].shape)} in the model'
        for k in wrong_shape
    ]
    problems = [
        f'  {what} ({len(items)}): {_listed(items)}'
        for what, items in (
            ('missing keys', missing),
            ('unexpected keys', unexpected),
            ('shape mismatches', shapes),
        )
        if items
    ]
    described = describe_model_cfg(teacher if teacher_cfg is None else teacher_cfg)
    if problems and strict:
        origin = _checkpoint_origin(ckpt)
        raise TeacherCheckpointMismatchError(
            '\n'.join(
                [
                    f'{name}: the checkpoint {ckpt!r} ({ckpt_key}) does not match its config '
                    f'({cfg_key} = {described}); it was not loaded, and nothing was trained '
                    '(a teacher left partly random would be distilled from silently).',
                    *problems,
                    *([origin] if origin else []),
                    f'  Give {cfg_key} the config the checkpoint was trained with, or '
                    f'{ckpt_key} a checkpoint of this config; to load only the tensors that '
                    f'fit, on purpose, set {strict_key}=False (--cfg-options {strict_key}=False).',
                ]
            )
        )
    for key in wrong_shape:
        del state[key]
    if metadata is not None:
        state._metadata = metadata
    teacher.load_state_dict(state, strict=False)  # everything else was checked above
    if problems:
        loaded = len([k for k in expected if k in state])
        print_log(
            '\n'.join(
                [
                    f'{name}: {strict_key}=False: loaded {loaded} of {len(expected)} tensors '
                    f'of {described} from {ckpt!r}; these keep their initial values or were '
                    'ignored:',
                    *problems,
                ]
            ),
            logger='current',
            level=logging.WARNING,
        )
