"""Single-teacher distillation where the teacher sees its own view of each sample."""

from typing import Dict, List, Optional, Union

import torch
from mmengine.model import BaseDataPreprocessor
from mmengine.structures import BaseDataElement
from mmrazor.models.algorithms import SingleTeacherDistill
from mmrazor.models.algorithms.base import LossResults
from mmrazor.models.utils import add_prefix
from mmrazor.registry import MODELS


def _refuse_batch_augments(preprocessor, name: str) -> None:
    """Raise a ``ValueError`` if ``preprocessor`` (a config dict or a module) has batch augments.

    Mixup and CutMix blend each sample with another one of the batch. Whichever
    side they run on, the teacher's and the student's features of a sample
    would no longer come from the same images: CRD's positive pair would be
    un-paired without any error.
    """
    if isinstance(preprocessor, dict):
        augments = preprocessor.get('batch_augments')
    else:
        augments = getattr(preprocessor, 'batch_augments', None)
    if not augments:
        return
    if not isinstance(augments, dict):  # a built RandomBatchAugment: name what it holds
        inner = getattr(augments, 'augments', augments)
        inner = inner if isinstance(inner, (list, tuple)) else [inner]
        augments = ', '.join(type(a).__name__ for a in inner)
    whose = "student's" if name == 'data_preprocessor' else "teacher's"
    other = "teacher's views" if name == 'data_preprocessor' else "student's batch"
    raise ValueError(
        f'CrossModalDistill: {name} (the {whose} preprocessing) must not have batch_augments '
        f'({augments}): they would mix the {whose} batch across samples but not the {other}, so '
        "a sample's teacher and student features would show different images and CRD's positive "
        f'pairs would be un-paired. Remove batch_augments from {name}; augment each sample in the '
        'pipeline instead, before TeacherView and inside KeyAlignedGeometry for other keys'
    )


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
    ``teacher_data_preprocessor`` (with ``training=False``). Batch
    augmentations (Mixup, CutMix) are refused in both preprocessors, as
    configs or as built modules: in the student's they would blend each
    student image with another sample while its teacher view stays unmixed,
    in the teacher's they would blend the teacher's batch independently of
    the student's; either way CRD's positive pairs would show different
    samples. Recorders, connectors and losses
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
        # the configs first, so that the error comes before the networks are built
        _refuse_batch_augments(kwargs.get('data_preprocessor'), 'data_preprocessor')
        _refuse_batch_augments(teacher_data_preprocessor, 'teacher_data_preprocessor')
        super().__init__(*args, **kwargs)
        # the student's preprocessor as built (given as a module, or taken from the architecture)
        _refuse_batch_augments(self.data_preprocessor, 'data_preprocessor')
        if teacher_data_preprocessor is None:
            raise ValueError(
                "CrossModalDistill needs teacher_data_preprocessor, the teacher's normalisation of "
                'its own view, e.g. '
                "teacher_data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', "
                "mean=[...], std=[...]) with one value per channel of the teacher's view"
            )
        if isinstance(teacher_data_preprocessor, dict):
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
                f"CrossModalDistill: the data samples carry no '{key}' field (the teacher's "
                f"view). Add dict(type='TeacherView', out_key='{key}', transforms=[...]) to the "
                f"pipeline and '{key}' to PackInputs' algorithm_keys, in every dataloader the "
                'distiller sees'
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
        """Run the teacher on its views and the student on ``batch_inputs``; return the losses."""
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
