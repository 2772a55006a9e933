"""Ensemble distillation: one student, several named frozen teachers, one MultiTeacherDistiller."""

import importlib.util
import logging
import os.path as osp
from typing import Dict, List, Mapping, Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import BaseModel, ModuleDict
from mmengine.structures import BaseDataElement
from mmrazor.models.algorithms.base import BaseAlgorithm, LossResults
from mmrazor.models.utils import add_prefix
from mmrazor.registry import MODELS

from ...utils.teacher_check import load_teacher_checkpoint
from ..distillers import MultiTeacherDistiller

TEACHER_KEYS = ('cfg', 'cfg_path', 'ckpt', 'ckpt_strict')


def teacher_model_cfg(name: str, spec: Mapping) -> dict:
    """The model config of a teacher given by ``cfg`` (a model config) or ``cfg_path`` (a file).

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
            file>, ckpt=<path or URL> | None, ckpt_strict=True)``; ``cfg_path``
            takes the file's ``model`` (see :func:`teacher_model_cfg`). ``ckpt``
            must be written: ``ckpt=None`` keeps the random initial weights, with a
            warning (tests and smoke runs). A checkpoint whose keys or shapes do
            not match the teacher's config is refused when the model is built,
            unless ``ckpt_strict=False`` asks to load only the tensors that fit.
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
                f"teacher '{name}' must be dict(cfg=... or cfg_path=..., ckpt=..., "
                f'ckpt_strict=True); got {spec!r}'
            )
        if 'ckpt' not in spec:
            raise ValueError(
                f"teacher '{name}' has no ckpt: write ckpt=<path or URL of its checkpoint> "
                f'(--cfg-options model.teachers.{name}.ckpt=/path/to/teacher.pth), or '
                'ckpt=None on purpose for a randomly initialised teacher (tests, smoke runs)'
            )
        ckpt = spec['ckpt']
        if ckpt is not None and (not isinstance(ckpt, str) or not ckpt):
            raise ValueError(
                f"teacher '{name}': ckpt must be a checkpoint path or URL, or None, got {ckpt!r}"
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
        if ckpt is None:
            print_log(
                f"teacher '{name}': ckpt=None, so it keeps its random initial weights and "
                'teaches nothing (meant for tests and smoke runs)',
                logger='current',
                level=logging.WARNING,
            )
        else:
            key = f'model.teachers.{name}'
            load_teacher_checkpoint(
                teacher,
                ckpt,
                name=f"teacher '{name}'",
                ckpt_key=f'{key}.ckpt',
                cfg_key=f'{key}.cfg' if 'cfg' in spec else f'{key}.cfg_path',
                strict_key=f'{key}.ckpt_strict',
                teacher_cfg=spec.get('cfg', spec),
                strict=spec.get('ckpt_strict', True),
            )
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
