"""MultiTeacherDistiller: mmrazor's ConfigurableDistiller, one set of recorders per teacher."""

from inspect import signature
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from mmrazor.models.distillers import ConfigurableDistiller
from mmrazor.models.task_modules import RecorderManager
from mmrazor.registry import MODELS
from torch import nn

RECORD_KEYS = (
    'recorder',
    'from_student',
    'teacher',
    'record_idx',
    'data_idx',
    'connector',
    'connector_idx',
)


@MODELS.register_module()
class MultiTeacherDistiller(ConfigurableDistiller):
    """``ConfigurableDistiller`` for several teachers, each with its own recorders.

    mmrazor's ``ConfigurableDistiller`` has a single teacher recorder manager, so
    two teachers cannot both be recorded (a ``ModuleOutputs`` recorder hooks one
    module of one model). Here ``teacher_recorders`` maps each teacher's name to
    that teacher's recorders, and a loss input read from a teacher names it::

        teacher_recorders=dict(
            resnet56=dict(feat=dict(type='ModuleOutputs', source='neck'),
                          logits=dict(type='ModuleOutputs', source='head.fc')),
            wrn_40_2=dict(feat=dict(type='ModuleOutputs', source='neck'),
                          logits=dict(type='ModuleOutputs', source='head.fc'))),
        loss_forward_mappings=dict(
            loss_crd_resnet56=dict(
                t_feats=dict(from_student=False, teacher='resnet56', recorder='feat',
                             connector='crd_t_resnet56'), ...),
            loss_kd=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                # a list of teachers: the element-wise mean of their records
                preds_T=dict(from_student=False, teacher=['resnet56', 'wrn_40_2'],
                             recorder='logits')))

    A teacher input (``from_student=False``) must name ``teacher``: one name, or a
    list of names whose records (after ``record_idx``/``data_idx``) are averaged
    element-wise before ``connector`` and ``connector_idx`` are applied; a list
    over logit recorders is KD against the ensemble's averaged logits. Student
    inputs are read as in ``ConfigurableDistiller``. Losses are used unchanged.
    Every mapping is checked when the distiller is built, with errors that name
    the loss, the argument and what is missing. The algorithm
    (``MultiTeacherDistill``) enters each teacher's recorders only around that
    teacher's forward, so method and function recorders of teachers of the same
    class do not record each other.

    Args:
        student_recorders (dict, optional): the student's recorders, as in
            ``ConfigurableDistiller``.
        teacher_recorders (dict): teacher name -> that teacher's recorder configs.
        connectors (dict, optional): as in ``ConfigurableDistiller``.
        distill_losses (dict, optional): as in ``ConfigurableDistiller``.
        loss_forward_mappings (dict, optional): as in ``ConfigurableDistiller``,
            plus ``teacher`` in every teacher input.
        distill_deliveries: not supported (a delivery replays one teacher's
            outputs inside the student; with several teachers it is ambiguous).
    """

    def __init__(
        self,
        student_recorders: Optional[Dict[str, Dict]] = None,
        teacher_recorders: Optional[Dict[str, Dict[str, Dict]]] = None,
        distill_deliveries: Optional[Dict[str, Dict]] = None,
        connectors: Optional[Dict[str, Dict]] = None,
        distill_losses: Optional[Dict[str, Dict]] = None,
        loss_forward_mappings: Optional[Dict[str, Dict]] = None,
        **kwargs,
    ):
        if distill_deliveries:
            raise ValueError(
                'MultiTeacherDistiller does not support distill_deliveries: a delivery '
                "replays one teacher's outputs inside the student, which is ambiguous "
                'with several teachers; use SingleTeacherDistill for deliveries'
            )
        if not isinstance(teacher_recorders, Mapping) or not teacher_recorders:
            raise ValueError(
                'MultiTeacherDistiller needs teacher_recorders=dict(<teacher name>='
                "dict(<recorder name>=dict(type='ModuleOutputs', source=...), ...), ...)"
            )
        for name, recorders in teacher_recorders.items():
            if not isinstance(recorders, Mapping) or any(
                not isinstance(cfg, Mapping) or 'type' not in cfg for cfg in recorders.values()
            ):
                raise ValueError(
                    f"teacher_recorders['{name}'] must map recorder names to recorder configs, "
                    f"e.g. {name}=dict(feat=dict(type='ModuleOutputs', source='neck')); "
                    'teacher_recorders is keyed by teacher name first'
                )
        super().__init__(
            student_recorders=student_recorders,
            connectors=connectors,
            distill_losses=distill_losses,
            **kwargs,
        )
        self.teacher_recorders: Dict[str, RecorderManager] = {
            name: RecorderManager(recorders) for name, recorders in teacher_recorders.items()
        }
        self.loss_forward_mappings = dict(loss_forward_mappings or {})
        self._check_mappings()

    @property
    def teacher_names(self) -> Sequence[str]:
        """The teachers this distiller has recorders for."""
        return tuple(self.teacher_recorders)

    def prepare_from_teacher(self, model: nn.Module) -> None:
        raise TypeError(
            'MultiTeacherDistiller records several teachers: call '
            'prepare_from_teachers(dict(<teacher name>=<model>, ...))'
        )

    def prepare_from_teachers(self, teachers: Mapping[str, nn.Module]) -> None:
        """Hook every teacher's recorders into that teacher; each recorder name must exist in it."""
        for name, manager in self.teacher_recorders.items():
            if name not in teachers:
                raise ValueError(
                    f"the distiller's teacher_recorders name teacher '{name}', which is not "
                    f'one of the teachers {sorted(teachers)}'
                )
            for recorder_name, recorder in manager.recorders.items():
                try:
                    recorder.initialize(teachers[name])
                except (AssertionError, AttributeError) as err:
                    raise ValueError(
                        f"teacher '{name}': recorder '{recorder_name}' (source "
                        f'{recorder.source!r}) cannot be attached: {err}'
                    ) from err

    def get_record(
        self,
        recorder: str,
        from_student: bool,
        record_idx: int = 0,
        data_idx: Optional[int] = None,
        connector: Optional[str] = None,
        connector_idx: Optional[int] = None,
        teacher: Union[str, Sequence[str], None] = None,
    ):
        """A student record, one teacher's record, or the element-wise mean of several teachers'."""
        if from_student:
            data = self.student_recorders.get_recorder(recorder).get_record_data(
                record_idx, data_idx
            )
        elif isinstance(teacher, str):
            data = (
                self.teacher_recorders[teacher]
                .get_recorder(recorder)
                .get_record_data(record_idx, data_idx)
            )
        else:
            data = torch.stack(
                [
                    self.teacher_recorders[name]
                    .get_recorder(recorder)
                    .get_record_data(record_idx, data_idx)
                    for name in teacher
                ]
            ).mean(0)
        if connector:
            data = self.connectors[connector](data)
        if connector_idx is not None:
            data = data[connector_idx]
        return data

    def _check_mappings(self) -> None:
        """Refuse, at build time, any mapping a loss forward could not be called with."""
        for loss_name, mapping in self.loss_forward_mappings.items():
            if loss_name not in self.distill_losses:
                raise ValueError(
                    f"loss_forward_mappings has '{loss_name}', which is not one of "
                    f'distill_losses {sorted(self.distill_losses)}'
                )
            params = signature(self.distill_losses[loss_name].forward).parameters
            required = {
                k
                for k, p in params.items()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            }
            missing = sorted(required - set(mapping))
            if missing:
                raise ValueError(
                    f"loss_forward_mappings['{loss_name}'] does not map the loss's "
                    f'argument(s) {missing}'
                )
            for arg, info in mapping.items():
                where = f"loss_forward_mappings['{loss_name}']['{arg}']"
                if arg not in params:
                    raise ValueError(
                        f'{where}: {type(self.distill_losses[loss_name]).__name__}.forward has '
                        f'no argument {arg!r} (it takes {list(params)})'
                    )
                self._check_record(where, dict(info))

    def _check_record(self, where: str, info: dict) -> None:
        unknown = sorted(set(info) - set(RECORD_KEYS))
        if unknown:
            raise ValueError(
                f'{where}: unknown key(s) {unknown}; a record is described by {RECORD_KEYS}'
            )
        if not isinstance(info.get('from_student'), bool) or 'recorder' not in info:
            raise ValueError(f'{where} needs from_student=True/False and recorder=<recorder name>')
        recorder = info['recorder']
        if info['from_student']:
            if 'teacher' in info:
                raise ValueError(
                    f'{where} reads the student (from_student=True) but names teacher '
                    f'{info["teacher"]!r}'
                )
            if recorder not in self.student_recorders.recorders:
                raise ValueError(
                    f"{where}: '{recorder}' is not one of the student_recorders "
                    f'{sorted(self.student_recorders.recorders)}'
                )
        else:
            teachers = info.get('teacher')
            if teachers is None:
                raise ValueError(
                    f'{where} reads a teacher (from_student=False) but names none: add '
                    f'teacher=<one of {list(self.teacher_names)}> (or a list of them, '
                    'averaged)'
                )
            names = [teachers] if isinstance(teachers, str) else list(teachers)
            if not names:
                raise ValueError(f'{where}: teacher is an empty list')
            for name in names:
                if name not in self.teacher_recorders:
                    raise ValueError(
                        f"{where} names teacher '{name}', which does not exist: the teachers "
                        f'are {list(self.teacher_names)}'
                    )
                if recorder not in self.teacher_recorders[name].recorders:
                    raise ValueError(
                        f"{where}: '{recorder}' is not one of teacher '{name}''s recorders "
                        f'{sorted(self.teacher_recorders[name].recorders)}'
                    )
        connector = info.get('connector')
        if connector and connector not in self.connectors:
            raise ValueError(
                f"{where}: connector '{connector}' is not one of the connectors "
                f'{sorted(self.connectors)}'
            )
