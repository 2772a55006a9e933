"""Two-stage detector distillation where the teacher classifies the student's proposals."""

from typing import List, Optional

import torch
from mmengine.structures import BaseDataElement
from mmrazor.models.algorithms import FpnTeacherDistill
from mmrazor.models.algorithms.base import LossResults
from mmrazor.models.task_modules.recorder import ModuleInputsRecorder
from mmrazor.models.utils import add_prefix
from mmrazor.registry import MODELS


@MODELS.register_module()
class FpnRoITeacherDistill(FpnTeacherDistill):
    """``FpnTeacherDistill`` whose teacher also runs its RoI box head on the student's sampled RoIs.

    mmrazor's ``FpnTeacherDistill`` runs only the teacher's backbone and neck,
    which is all feature distillation (PKD, CWD, FBKD) needs. Logit
    distillation on a two-stage detector (CKD's detection setting) needs the
    teacher's RoI classification of the *same* proposals the student sampled,
    so that row i of both logit matrices describes the same box. After the
    student's forward this algorithm reads those RoIs from a student
    ``ModuleInputs`` recorder on ``roi_head.bbox_roi_extractor`` and feeds
    them, with the teacher's FPN features, to the teacher's
    ``roi_head._bbox_forward``. Both teacher passes run inside one
    teacher-recorder context (entering a recorder clears it), so teacher
    recorders on the neck and on ``roi_head.bbox_head.fc_cls`` are both
    filled, and ``ConfigurableDistiller`` maps them to losses as usual.

    Args:
        rois_recorder (str): name of the student recorder that records the
            inputs of the student's ``roi_head.bbox_roi_extractor``
            (``dict(type='ModuleInputs', source='roi_head.bbox_roi_extractor')``);
            its second input is the (n, 5) RoI tensor. Defaults to 'rois'.
        **kwargs: the arguments of ``FpnTeacherDistill`` (``distiller``,
            ``teacher``, ``teacher_ckpt``, ``architecture``, ...).
    """

    def __init__(self, *args, rois_recorder: str = 'rois', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        recorders = self.distiller.student_recorders.recorders
        if not isinstance(recorders.get(rois_recorder), ModuleInputsRecorder):
            raise ValueError(
                f"FpnRoITeacherDistill needs a student recorder named '{rois_recorder}' of type "
                "ModuleInputs on the student's RoI extractor, e.g. student_recorders=dict("
                f"{rois_recorder}=dict(type='ModuleInputs', source='roi_head.bbox_roi_extractor'))"
            )
        from mmdet.models.roi_heads import (
            StandardRoIHead,
        )  # imported only when a detector is distilled

        if not isinstance(getattr(self.teacher, 'roi_head', None), StandardRoIHead):
            raise TypeError(
                'FpnRoITeacherDistill needs a two-stage teacher whose roi_head is a '
                f'StandardRoIHead; got {type(getattr(self.teacher, "roi_head", None)).__name__}'
            )
        self.rois_recorder = rois_recorder

    def student_rois(self) -> torch.Tensor:
        """The (n, 5) RoIs (batch index, x1, y1, x2, y2) the student's box head saw this step.

        ``StandardRoIHead.loss`` runs the box branch first, so the first record
        holds the box RoIs even when a mask branch shares the extractor.
        """
        recorder = self.distiller.student_recorders.get_recorder(self.rois_recorder)
        if not recorder.data_buffer:
            raise RuntimeError(
                f"the student recorder '{self.rois_recorder}' recorded nothing: it must "
                "record the inputs of the student's roi_head.bbox_roi_extractor"
            )
        return recorder.get_record_data(record_idx=0, data_idx=1).detach()

    def loss(
        self, batch_inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None
    ) -> LossResults:
        """Teacher FPN, student forward, teacher RoI head on the student's RoIs, then distill."""
        losses = dict()
        self.distiller.set_deliveries_override(False)
        with self.distiller.teacher_recorders:
            with self.distiller.deliveries, torch.set_grad_enabled(self.teacher_trainable):
                teacher_feats = self.teacher.extract_feat(batch_inputs)

            self.distiller.set_deliveries_override(True)
            with self.distiller.student_recorders, self.distiller.deliveries:
                student_losses = self.student(batch_inputs, data_samples, mode='loss')
            losses.update(add_prefix(student_losses, 'student'))

            with torch.set_grad_enabled(self.teacher_trainable):
                self.teacher.roi_head._bbox_forward(teacher_feats, self.student_rois())

        if not self.distillation_stopped:
            losses.update(add_prefix(self.distiller.compute_distill_losses(), 'distill'))
        return losses
