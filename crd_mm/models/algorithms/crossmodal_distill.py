"""Single-teacher distillation where the teacher sees its own view of each sample."""

from typing import Dict, List, Optional, Union

import torch
from mmengine.model import BaseDataPreprocessor
from mmengine.structures import BaseDataElement
from mmrazor.models.algorithms import SingleTeacherDistill
from mmrazor.models.algorithms.base import LossResults
from mmrazor.models.utils import add_prefix
from mmrazor.registry import MODELS


@MODELS.register_module()
class CrossModalDistill(SingleTeacherDistill):
    """``SingleTeacherDistill`` whose teacher gets another view of the sample than the student.

    CRD's cross-modal transfer (Tian et al. 2020): a teacher trained on one
    modality (the L channel of Lab, a full-resolution image, RGB) passes its
    representation to a student that sees another (ab, a low-resolution
    image, depth) of the *same* samples. The pipeline's ``TeacherView``
    transform stores the teacher's view in each data sample (field
    ``teacher_input_key``, added to ``PackInputs``' ``algorithm_keys``). The
    algorithm's own ``data_preprocessor`` prepares the student's inputs as
    usual; the teacher's views are stacked and prepared by
    ``teacher_data_preprocessor`` (with ``training=False``: a batch
    augmentation such as Mixup would mix the teacher's batch differently from
    the student's, so it is refused there). Recorders, connectors and losses
    are configured exactly as for ``SingleTeacherDistill``; each sample's
    teacher and student features stay paired, as CRD needs. Validate with
    ``CrossModalDistillValLoop``, which scores the teacher on its own view.

    Args:
        teacher_data_preprocessor (dict | BaseDataPreprocessor): the teacher's
            normalisation, e.g. ``dict(type='mmpretrain.ClsDataPreprocessor',
            mean=[127.5], std=[127.5])`` for a one-channel L view. Required:
            the two views usually differ in channels or statistics.
        teacher_input_key (str): the data-sample field holding the teacher's
            view. Defaults to 'teacher_inputs' (``TeacherView``'s default).
        **kwargs: the arguments of ``SingleTeacherDistill``.
    """

    def __init__(
        self,
        *args,
        teacher_data_preprocessor: Optional[Union[Dict, BaseDataPreprocessor]] = None,
        teacher_input_key: str = 'teacher_inputs',
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if teacher_data_preprocessor is None:
            raise ValueError(
                "CrossModalDistill needs teacher_data_preprocessor, the teacher's normalisation of its "
                "own view, e.g. teacher_data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', "
                "mean=[...], std=[...]) with one value per channel of the teacher's view"
            )
        if isinstance(teacher_data_preprocessor, dict):
            if teacher_data_preprocessor.get('batch_augments'):
                raise ValueError(
                    'CrossModalDistill: teacher_data_preprocessor must not have batch_augments: they '
                    "would mix the teacher's batch independently of the student's and break the "
                    'pairing of their samples; remove them'
                )
            teacher_data_preprocessor = MODELS.build(teacher_data_preprocessor)
        if not isinstance(teacher_data_preprocessor, BaseDataPreprocessor):
            raise TypeError(
                'teacher_data_preprocessor must be a dict or a BaseDataPreprocessor, got '
                f'{type(teacher_data_preprocessor).__name__}'
            )
        self.teacher_data_preprocessor = teacher_data_preprocessor
        self.teacher_input_key = teacher_input_key

    def teacher_inputs(
        self, data_samples: Optional[List[BaseDataElement]], num_inputs: int
    ) -> torch.Tensor:
        """The teacher's batch: each sample's view, stacked and normalised.

        Raises a ``ValueError`` when a sample carries no view or more than one
        (the teacher's batch would then differ from the student's).
        """
        key = self.teacher_input_key
        if not data_samples or any(key not in s for s in data_samples):
            raise ValueError(
                f"CrossModalDistill: the data samples carry no '{key}' field (the teacher's view). "
                f"Add dict(type='TeacherView', out_key='{key}', transforms=[...]) to the pipeline and "
                f"'{key}' to PackInputs' algorithm_keys, in every dataloader the distiller sees"
            )
        views = [s.get(key) for s in data_samples]
        num_views = sum(v.shape[0] if v.ndim == 4 else 1 for v in views)
        if num_views != num_inputs or any(v.ndim != 3 for v in views):
            raise ValueError(
                f'CrossModalDistill: the views have different batch sizes: the teacher would get '
                f'{num_views} images but the student gets {num_inputs}. Every sample must carry '
                f"exactly one (C, H, W) teacher view in '{key}' (shapes: "
                f'{[tuple(v.shape) for v in views[:4]]}...)'
            )
        return self.teacher_data_preprocessor(dict(inputs=views), training=False)['inputs']

    def loss(
        self, batch_inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None
    ) -> LossResults:
        """The teacher runs on its views, the student on ``batch_inputs``, then the distill losses."""
        teacher_inputs = self.teacher_inputs(data_samples, len(batch_inputs))
        losses = dict()
        self.distiller.set_deliveries_override(False)
        with self.distiller.teacher_recorders, self.distiller.deliveries:
            with torch.set_grad_enabled(self.teacher_trainable):
                teacher_losses = self.teacher(teacher_inputs, data_samples, mode='loss')
        if self.teacher_trainable:
            losses.update(add_prefix(teacher_losses, 'teacher'))

        self.distiller.set_deliveries_override(True)
        with self.distiller.student_recorders, self.distiller.deliveries:
            with torch.set_grad_enabled(self.calculate_student_loss or self.student_trainable):
                student_losses = self.student(batch_inputs, data_samples, mode='loss')
        if self.calculate_student_loss:
            losses.update(add_prefix(student_losses, 'student'))

        if not self.distillation_stopped:
            losses.update(add_prefix(self.distiller.compute_distill_losses(), 'distill'))
        return losses

    @torch.no_grad()
    def teacher_val_step(self, data: Union[dict, tuple, list]) -> list:
        """The teacher's predictions on its own views (``CrossModalDistillValLoop``)."""
        data = self.data_preprocessor(data, False)
        inputs = self.teacher_inputs(data['data_samples'], len(data['inputs']))
        return self.teacher(inputs, data['data_samples'], mode='predict')
