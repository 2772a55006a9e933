"""From a distillation run to a deployable student: its own config and checkpoint, then a release.

A distiller's checkpoint holds the student under ``architecture.``, next to
its teachers, connectors, memory banks and the optimizer state, and its config
builds an mmrazor algorithm that needs the teachers. :func:`export_student`
writes what a user deploys instead: one config that builds the student alone
(mmpretrain's ``init_model`` / ``ImageClassificationInferencer``, mmdet's
``init_detector``, ``tools/test.py``) and one checkpoint of the student's
weights under its own keys. :func:`publish_checkpoint` is the last step of a
release, as mmpretrain's ``publish_model.py``: training state stripped, the
file's sha256 prefix in its name.

Both are driven by ``tools/model_converters/convert_to_student.py`` and
``tools/model_converters/publish_model.py`` (docs/export.md).
"""

import copy
import hashlib
import importlib
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint

STUDENT_PREFIX = 'architecture.'
# The runtime settings a test or inference run of the student reads from the distiller's config;
# everything about training (schedules, optimizer, train loop and data, custom hooks such as
# CRDMemoryBankHook, resume/load_from) stays behind.
RUNTIME_KEYS = ('default_hooks', 'env_cfg', 'visualizer', 'log_processor', 'log_level')
EVAL_KEYS = ('val_dataloader', 'val_evaluator', 'val_cfg', 'test_dataloader', 'test_evaluator')
# What a published checkpoint keeps: the weights and their description.
PUBLISHED_KEYS = ('meta', 'state_dict')


def _plain(value: Any) -> Any:
    """``value`` with dicts, ConfigDicts, lists and tuples rebuilt as plain Python containers."""
    if isinstance(value, (ConfigDict, dict)):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _plain_meta(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists.

    So that ``torch.load(weights_only=True)`` reads the file without any
    allow-listed class: a deployment need not import crd_mm to load it.
    """
    if isinstance(value, dict):
        return {k: _plain_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_meta(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _type_name(cfg: dict) -> str:
    """The registered name of a config's ``type`` without its scope ('mmpretrain.X' -> 'X')."""
    type_ = cfg.get('type')
    if isinstance(type_, str):
        return type_.rsplit('.', 1)[-1]
    return getattr(type_, '__name__', str(type_))


def _register_scope(scope: str) -> None:
    """Register every module of an OpenMMLab package (mmdet, mmpretrain), as mmengine's hub does."""
    try:
        importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    except (ImportError, AttributeError, TypeError):
        pass  # a scope without register_all_modules: its modules register on import


def student_model_cfg(cfg: Config) -> Tuple[dict, str]:
    """The student's model config, with the data preprocessor the run fed it, and its scope.

    ``cfg.model.architecture`` is the student of every mmrazor distiller
    (``SingleTeacherDistill``, ``FpnTeacherDistill``, crd_mm's
    ``MultiTeacherDistill``, ``CrossModalDistill``, ...): a model config, or
    mmrazor's ``dict(cfg_path='mmdet::<config>', ...)``, which builds that
    config's ``model`` (keyword arguments beside ``cfg_path`` are defaults of
    the model, as in ``mmengine.hub.get_model``). The data preprocessor is the
    algorithm's (``model.data_preprocessor``, else the config's top-level one,
    which the Runner gives the algorithm), else the student's own, since the
    algorithm runs its preprocessor, not the student's, on every batch.

    Raises:
        ValueError: ``cfg.model`` is not a distiller (has no ``architecture``).
    """
    model = cfg.get('model')
    if not model or 'architecture' not in model:
        kind = model.get('type') if model else None
        raise ValueError(
            f'the config builds a {kind!r} model, not a distiller: it has no model.architecture '
            '(the student). A checkpoint of a model trained alone already is the deployable '
            "network's; strip its training state with tools/model_converters/publish_model.py"
        )
    student = _plain(model['architecture'])
    if 'cfg_path' in student and 'type' not in student:
        from mmengine.hub import get_config

        cfg_path = student.pop('cfg_path')
        student.pop('pretrained', None)
        scope = cfg_path.split('::', 1)[0] if '::' in cfg_path else cfg.get('default_scope')
        student_cfg = get_config(cfg_path)
        built = _plain(student_cfg.model)
        if 'data_preprocessor' in student_cfg:
            built['data_preprocessor'] = _plain(student_cfg.data_preprocessor)
        for key, value in student.items():  # get_model's default_args
            built.setdefault(key, value)
        student = built
    else:
        scope = student.get('_scope_') or model.get('_scope_') or cfg.get('default_scope')
    if not scope:
        raise ValueError(
            'cannot tell which package builds the student: give model.architecture a _scope_ (e.g. '
            "_scope_='mmpretrain') or the config a default_scope"
        )
    preprocessor = model.get('data_preprocessor') or cfg.get('data_preprocessor')
    if preprocessor:
        student['data_preprocessor'] = _plain(preprocessor)
    return student, scope


def _student_pipeline(pipeline: list, input_key: str) -> list:
    """A pipeline without the teacher's view: ``TeacherView`` removed, its key unpacked.

    ``TeacherView`` leaves the sample itself (the student's view) untouched, so
    the rest of the pipeline is exactly what the student saw.
    """
    kept = []
    for transform in pipeline:
        if not isinstance(transform, dict):
            kept.append(transform)
            continue
        if _type_name(transform) == 'TeacherView':
            continue
        keys = transform.get('algorithm_keys')
        if keys and input_key in keys:
            transform = dict(transform)
            rest = [k for k in keys if k != input_key]
            if rest:
                transform['algorithm_keys'] = type(keys)(rest)
            else:
                del transform['algorithm_keys']
        kept.append(transform)
    return kept


def _student_dataset(dataset: dict, input_key: str) -> dict:
    """``dataset`` (through dataset wrappers) with the student's pipeline."""
    dataset = dict(dataset)
    if isinstance(dataset.get('pipeline'), list):
        dataset['pipeline'] = _student_pipeline(dataset['pipeline'], input_key)
    if isinstance(dataset.get('dataset'), dict):
        dataset['dataset'] = _student_dataset(dataset['dataset'], input_key)
    if isinstance(dataset.get('datasets'), list):
        dataset['datasets'] = [_student_dataset(d, input_key) for d in dataset['datasets']]
    return dataset


def _crd_mm_names() -> Set[str]:
    """Names crd_mm registered in any OpenMMLab registry (models, datasets, transforms, ...)."""
    import mmengine.registry as root

    import crd_mm  # noqa: F401  (registers them)

    names, stack = set(), [r for r in vars(root).values() if isinstance(r, root.Registry)]
    while stack:
        registry = stack.pop()
        stack.extend(registry.children.values())
        for name, obj in registry.module_dict.items():
            if getattr(obj, '__module__', '').split('.')[0] == 'crd_mm':
                names.add(name)
    return names


def _type_names(cfg: Any) -> Set[str]:
    """Every ``type`` named anywhere in a nested config."""
    if isinstance(cfg, dict):
        found = {_type_name(cfg)} if 'type' in cfg else set()
        for value in cfg.values():
            found |= _type_names(value)
        return found
    if isinstance(cfg, (list, tuple)):
        return set().union(*(_type_names(v) for v in cfg)) if cfg else set()
    return set()


def student_config(cfg: Config) -> Config:
    """The standalone config of ``cfg``'s student: network, preprocessing, test data and evaluator.

    ``default_scope`` is the student's package (``mmpretrain``, ``mmdet``),
    so that mmpretrain's and mmdet's APIs and ``tools/test.py`` build it
    directly. The val/test dataloaders and evaluators are the distiller's;
    a cross-modal distiller's pipelines lose the teacher's view
    (``TeacherView`` and its ``PackInputs`` key). ``val_cfg``/``test_cfg``
    become plain loops (the distillers' loops also score teachers). No
    teacher, distiller, training loop, optimizer or custom hook remains, nor
    crd_mm's training hooks in ``default_hooks`` (``StopOnNonFiniteLossHook``);
    ``custom_imports`` imports crd_mm only if the student, its data or its
    evaluator use a module crd_mm registers (e.g. the CIFAR backbones).
    """
    student, scope = student_model_cfg(cfg)
    input_key = cfg.model.get('teacher_input_key', 'teacher_inputs')
    out: Dict[str, Any] = dict(default_scope=scope, model=student)
    for key in EVAL_KEYS + ('test_cfg',) + RUNTIME_KEYS:
        if cfg.get(key) is not None:
            out[key] = _plain(cfg[key])
    if 'test_dataloader' not in out and 'val_dataloader' in out:
        out['test_dataloader'] = copy.deepcopy(out['val_dataloader'])
        out.setdefault('test_evaluator', copy.deepcopy(out.get('val_evaluator')))
    for key in ('val_dataloader', 'test_dataloader'):
        if isinstance(out.get(key), dict) and isinstance(out[key].get('dataset'), dict):
            out[key]['dataset'] = _student_dataset(out[key]['dataset'], input_key)
    for key in ('val_cfg', 'test_cfg'):
        loop = out.get(key)
        if isinstance(loop, dict) and 'Distill' in _type_name(loop):
            out[key] = {k: v for k, v in loop.items() if k not in ('type', '_scope_')}
    for key in ('val', 'test'):
        if f'{key}_dataloader' in out:
            out.setdefault(f'{key}_cfg', {})
    for key in ('tta_model', 'tta_pipeline'):
        if cfg.get(key) is not None:
            out[key] = _plain(cfg[key])
    if isinstance(cfg.get('test_pipeline'), list):  # mmseg's inference_model reads it
        # by bare type name (it drops 'LoadAnnotations'): the student's own scope is implied
        out['test_pipeline'] = [
            dict(t, type=t['type'][len(scope) + 1 :])
            if isinstance(t.get('type'), str) and t['type'].startswith(f'{scope}.')
            else t
            for t in _student_pipeline(_plain(cfg.test_pipeline), input_key)
        ]
    ours = _crd_mm_names()
    if isinstance(out.get('default_hooks'), dict):  # crd_mm's hooks act in training only
        out['default_hooks'] = {
            k: v
            for k, v in out['default_hooks'].items()
            if not (isinstance(v, dict) and _type_name(v) in ours)
        }
    if _type_names(out) & ours:  # the run's own imports (crd_mm, or one of its modules)
        imports = _plain(cfg.get('custom_imports', {})).get('imports') or ['crd_mm']
        out = dict(custom_imports=dict(imports=imports, allow_failed_imports=False), **out)
    return Config(out)


def build_student(config: Config) -> torch.nn.Module:
    """Build the model of a student config in its own scope (nothing is loaded or initialised)."""
    from mmengine.registry import MODELS

    scope = config.get('default_scope')
    if scope:
        _register_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(copy.deepcopy(config.model))


def student_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The ``architecture.*`` entries of a distiller's state dict, under the student's own keys."""
    state = {
        k[len('module.') :] if k.startswith('module.') else k: v for k, v in state_dict.items()
    }
    student = {
        k[len(STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)
    }
    if not student:
        found = sorted({k.split('.', 1)[0] for k in state})
        raise KeyError(
            f"the checkpoint holds no '{STUDENT_PREFIX}*' weights (its top-level keys: {found}): "
            "it is not a distiller's checkpoint, or not one of this config"
        )
    return student


def check_weights_fit(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Raise a ``ValueError`` naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    problems = []
    for what, keys in (
        ('missing keys', [k for k in expected if k not in state]),
        ('unexpected keys', [k for k in state if k not in expected]),
        (
            'shape mismatches',
            [
                f'{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}'
                for k, v in expected.items()
                if k in state and tuple(state[k].shape) != tuple(v.shape)
            ],
        ),
    ):
        if keys:
            problems.append(
                f'{what} ({len(keys)}): {", ".join(keys[:5])}' + ', ...' * (len(keys) > 5)
            )
    if problems:
        raise ValueError(
            "the checkpoint's student weights do not fit the config's student: "
            + '; '.join(problems)
            + '. Is the checkpoint from a run of this config?'
        )


def export_student(
    config: Config,
    checkpoint: str,
    out_dir: str,
    name: Optional[str] = None,
    config_path: Optional[str] = None,
) -> Tuple[str, str]:
    """Write the student of a distillation run as ``<out_dir>/<name>.py`` and ``<name>.pth``.

    The config is :func:`student_config`, written by mmengine's
    ``Config.dump``. The checkpoint holds ``state_dict`` (the student's
    weights, ``architecture.`` stripped) and ``meta`` (the run's: epoch,
    iteration, seed, dataset_meta, ...; ``cfg`` becomes the student config's
    text and ``distilled_from`` names the source files); nothing else, neither
    optimizer, memory banks, teachers nor connectors. Before writing, the
    student is built from the new config and its weights must fit it exactly.

    Args:
        config (Config): the distiller's config (the one the run trained
            with, e.g. the copy it dumped into its work directory).
        checkpoint (str): a checkpoint of that run.
        out_dir (str): the directory to write into (created if missing).
        name (str, optional): the files' name. Defaults to the config's file
            name with ``_student`` appended.
        config_path (str, optional): where ``config`` came from, recorded in
            ``meta['distilled_from']``. Defaults to ``config.filename``.

    Returns:
        tuple[str, str]: the paths of the config and the checkpoint.
    """
    config_path = config_path or config.filename
    if name is None:
        stem = osp.splitext(osp.basename(config_path))[0] if config_path else 'model'
        name = f'{stem}_student'
    exported = student_config(config)
    loaded = _load_checkpoint(checkpoint, map_location='cpu')
    if not isinstance(loaded, dict) or 'state_dict' not in loaded:
        raise ValueError(
            f'{checkpoint} holds no state_dict: is it a checkpoint of an mmengine run?'
        )
    state = student_state_dict(loaded['state_dict'])
    check_weights_fit(build_student(exported), state)

    os.makedirs(out_dir, exist_ok=True)
    config_file = osp.join(out_dir, f'{name}.py')
    checkpoint_file = osp.join(out_dir, f'{name}.pth')
    exported.dump(config_file)
    meta = _plain_meta(dict(loaded.get('meta') or {}))
    meta['cfg'] = exported.pretty_text
    meta['distilled_from'] = dict(
        config=config_path,
        checkpoint=checkpoint,
        algorithm=str(_type_name(config.model)),
    )
    save_checkpoint(dict(meta=meta, state_dict=state), checkpoint_file)
    return config_file, checkpoint_file


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def publish_checkpoint(in_file: str, out_file: str) -> Tuple[str, List[str]]:
    """Write ``in_file`` without its training state as ``<out stem>-<sha256[:8]>.pth``.

    Keeps only ``state_dict`` and ``meta`` (numpy values in ``meta`` become
    Python numbers, so the file loads with ``torch.load(weights_only=True)``
    and no allow-list); the optimizer, message hub, parameter schedulers,
    memory banks (``CRDMemoryBankHook``) and any other hook's state go. The
    hash is of the written file, as mmpretrain's ``publish_model.py``.

    Returns:
        tuple[str, list[str]]: the published file's path and the removed keys.
    """
    if not out_file.endswith('.pth'):
        raise ValueError(
            f'the output file must end with .pth (got {out_file!r}): name.pth is written as '
            'name-<sha256[:8]>.pth'
        )
    checkpoint = _load_checkpoint(in_file, map_location='cpu')
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise ValueError(f'{in_file} holds no state_dict: is it a checkpoint of an mmengine run?')
    removed = sorted(k for k in checkpoint if k not in PUBLISHED_KEYS)
    published = {k: checkpoint[k] for k in PUBLISHED_KEYS if k in checkpoint}
    if 'meta' in published:
        published['meta'] = _plain_meta(published['meta'])
    out_dir = osp.dirname(osp.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    torch.save(published, out_file)
    final = f'{out_file[: -len(".pth")]}-{sha256_of(out_file)[:8]}.pth'
    os.replace(out_file, final)
    return final, removed
