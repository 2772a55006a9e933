"""Ensemble distillation: one student, several named frozen teachers, one MultiTeacherDistiller."""

import importlib.util
import os.path as osp
from typing import Dict, List, Mapping, Optional

import torch
from mmengine.config import Config
from mmengine.model import BaseModel, ModuleDict
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.structures import BaseDataElement
from mmrazor.models.algorithms.base import BaseAlgorithm, LossResults
from mmrazor.models.utils import add_prefix
from mmrazor.registry import MODELS

from ..distillers import MultiTeacherDistiller

TEACHER_KEYS = ('cfg', 'cfg_path', 'ckpt')


def teacher_model_cfg(name: str, spec: Mapping) -> dict:
    """The model config of a teacher given by ``cfg`` (a model config) or ``cfg_path`` (a config file).

    ``cfg_path`` is a config file whose ``model`` is taken: a path (relative to
    the current directory; configs can write ``'{{ fileDirname }}/...'`` to be
    independent of it) or ``'<package>::<path>'`` inside an installed OpenMMLab
    package, e.g. ``'mmpretrain::resnet/resnet50_8xb32_in1k.py'``. The model is
    built in that file's scope.
    """
    if ('cfg' in spec) == ('cfg_path' in spec):
        raise ValueError(
            f"teacher '{name}' needs exactly one of cfg=<model config> or cfg_path=<config "
            f'file>, got keys {sorted(spec)}'
        )
    if 'cfg' in spec:
        return dict(spec['cfg'])
    path = spec['cfg_path']
    if '::' in path:
        package = path.split('::', 1)[0]
        if importlib.util.find_spec(package) is None:
            raise ModuleNotFoundError(
                f"teacher '{name}': cfg_path {path!r} is inside package "
                f"'{package}', which is not installed"
            )
        from mmengine.hub import get_config

        cfg = get_config(path)
        scope = package
    else:
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"teacher '{name}': config file {path!r} not found (a relative "
                f'cfg_path is read from the current directory, {osp.abspath(".")})'
            )
        cfg = Config.fromfile(path)
        scope = cfg.get('default_scope')
    if 'model' not in cfg:
        raise ValueError(f"teacher '{name}': the config {path!r} defines no model")
    model_cfg = cfg.model.to_dict()
    if scope:
        model_cfg.setdefault('_scope_', scope)
    return model_cfg


def load_teacher_checkpoint(name: str, teacher: torch.nn.Module, ckpt: str) -> None:
    """Load ``ckpt`` (path or URL) into ``teacher``; refuse, on every rank, a checkpoint of another model.

    mmengine's ``load_checkpoint`` only warns about missing or unexpected keys
    (and raises, when strict, on rank 0 alone); a teacher that silently kept
    random weights would be distilled from without anyone noticing.
    """
    try:
        checkpoint = CheckpointLoader.load_checkpoint(ckpt, map_location='cpu')
    except FileNotFoundError as err:
        raise FileNotFoundError(f"teacher '{name}': checkpoint {ckpt!r} not found ({err})") from err
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"teacher '{name}': {ckpt!r} holds no state_dict")
    state = {k[len('module.') :] if k.startswith('module.') else k: v for k, v in state.items()}
    expected = teacher.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f'{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model'
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        problems = [
            f'{what} ({len(items)}): {", ".join(items[:5])}{", ..." if len(items) > 5 else ""}'
            for what, items in (
                ('missing keys', missing),
                ('unexpected keys', unexpected),
                ('shape mismatches', shapes),
            )
            if items
        ]
        raise ValueError(
            f"teacher '{name}': the checkpoint {ckpt!r} does not match its config; "
            + '; '.join(problems)
            + '. Give the teacher the config its checkpoint was '
            'trained with (cfg or cfg_path), or the checkpoint of that config.'
        )
    teacher.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent


@MODELS.register_module()
class MultiTeacherDistill(BaseAlgorithm):
    """Distil several frozen teachers (an ensemble) into one student.

    Each teacher is built from its own config, loaded from its own checkpoint,
    frozen (``requires_grad=False``) and kept in eval mode, also when the runner
    calls ``train()`` (no dropout, batch-norm statistics never move). Every
    training step runs each teacher without gradient inside its own recorders
    (see :class:`~crd_mm.models.distillers.MultiTeacherDistiller`), then the
    student with its task loss, then the distiller's losses, which can read any
    teacher's records or the mean of several (KD against the averaged logits).
    Contrastive losses against several teachers are one loss per teacher-student
    pair (e.g. ``loss_crd_<teacher>``); ``CRDMemoryBankHook`` finds every one of
    them and keeps one bank pair per loss. Validation scores the student
    (mmengine's ``ValLoop``) or the student and then every teacher
    (``MultiTeacherDistillValLoop``). All networks see the same inputs, preprocessed by the
    algorithm's ``data_preprocessor`` (the student's when not given), as in
    mmrazor's ``SingleTeacherDistill``.

    Args:
        architecture (dict | BaseModel): the student.
        teachers (dict): teacher name -> ``dict(cfg=<model config> | cfg_path=<config
            file>, ckpt=<path or URL> | None)``; ``cfg_path`` takes the file's
            ``model`` (see :func:`teacher_model_cfg`), ``ckpt=None`` keeps the
            initial weights (tests only). A checkpoint whose keys or shapes do
            not match the teacher's config is refused when the model is built.
            The names key the teachers' state (``teachers.<name>.``) and the
            distiller's ``teacher_recorders``.
        distiller (dict): a ``MultiTeacherDistiller`` config whose
            ``teacher_recorders`` name only these teachers.
        data_preprocessor (dict, optional): shared by all networks.
        init_cfg (dict, optional): as in ``BaseAlgorithm``.
    """

    def __init__(
        self,
        architecture,
        teachers: Dict[str, Dict],
        distiller: dict,
        data_preprocessor: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(architecture, data_preprocessor, init_cfg)
        if not isinstance(teachers, Mapping) or not teachers:
            raise ValueError(
                'MultiTeacherDistill needs teachers=dict(<name>=dict(cfg=<model config> or '
                'cfg_path=<config file>, ckpt=<path, URL or None>), ...)'
            )
        self.teachers = ModuleDict(
            {name: self._build_teacher(name, spec) for name, spec in teachers.items()}
        )
        self.distiller = MODELS.build(distiller)
        if not isinstance(self.distiller, MultiTeacherDistiller):
            raise TypeError(
                'MultiTeacherDistill needs a MultiTeacherDistiller (per-teacher recorders), '
                f'got {type(self.distiller).__name__}'
            )
        unknown = sorted(set(self.distiller.teacher_names) - set(self.teachers))
        if unknown:
            raise ValueError(
                f"the distiller's teacher_recorders name teacher(s) {unknown}, which do not "
                f'exist: the teachers are {list(self.teachers)}'
            )
        self.distiller.prepare_from_student(self.student)
        self.distiller.prepare_from_teachers(self.teachers)
        # set by mmrazor's StopDistillHook
        self.distillation_stopped = False

    @staticmethod
    def _build_teacher(name: str, spec) -> BaseModel:
        if not isinstance(spec, Mapping) or set(spec) - set(TEACHER_KEYS):
            raise ValueError(
                f"teacher '{name}' must be dict(cfg=... or cfg_path=..., ckpt=...); got {spec!r}"
            )
        teacher = MODELS.build(teacher_model_cfg(name, spec))
        if not isinstance(teacher, BaseModel):
            raise TypeError(
                f"teacher '{name}' must build a BaseModel, got {type(teacher).__name__}"
            )
        # recorders keep references to module outputs: an in-place op would overwrite them
        for module in teacher.modules():
            if isinstance(getattr(module, 'inplace', None), bool):
                module.inplace = False
        if spec.get('ckpt'):
            load_teacher_checkpoint(name, teacher, spec['ckpt'])
            teacher._is_init = True  # the runner's init_weights() must not overwrite it
        teacher.requires_grad_(False)
        return teacher.eval()

    @property
    def student(self) -> BaseModel:
        """Alias of ``architecture``."""
        return self.architecture

    def loss(
        self, batch_inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None
    ) -> LossResults:
        """Each teacher inside its own recorders, the student, then the distillation losses."""
        with torch.no_grad():
            for name, teacher in self.teachers.items():
                recorders = self.distiller.teacher_recorders.get(name)
                if recorders is None:
                    continue  # a teacher no loss reads
                with recorders:
                    teacher(batch_inputs, data_samples, mode='loss')
        with self.distiller.student_recorders:
            student_losses = self.student(batch_inputs, data_samples, mode='loss')
        losses = add_prefix(student_losses, 'student')
        if not self.distillation_stopped:
            losses.update(add_prefix(self.distiller.compute_distill_losses(), 'distill'))
        return losses

    def train(self, mode: bool = True) -> 'MultiTeacherDistill':
        """Switch the student and distiller; the teachers always stay in eval mode."""
        super().train(mode)
        self.teachers.eval()
        return self
