"""Validation of a cross-modal distiller: the student on its view, the teacher on its own."""

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import autocast
from mmrazor.engine.runner import SingleTeacherDistillValLoop
from mmrazor.registry import LOOPS


@LOOPS.register_module()
class CrossModalDistillValLoop(SingleTeacherDistillValLoop):
    """``SingleTeacherDistillValLoop`` for ``CrossModalDistill``.

    mmrazor's loop scores the teacher on the student's inputs, which a
    cross-modal teacher cannot read (another channel count or resolution).
    This loop scores the student as usual, then the teacher on the views
    stored in the data samples (``CrossModalDistill.teacher_val_step``);
    teacher metrics are logged with the prefix ``teacher.``.
    """

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'teacher_val_step'):
            raise TypeError(
                'CrossModalDistillValLoop validates a CrossModalDistill model (it scores the '
                f'teacher on its own view); got {type(model).__name__}. Use '
                "val_cfg=dict(type='mmrazor.SingleTeacherDistillValLoop') for other distillers"
            )
        self.distiller_model = model

    @torch.no_grad()
    def run_iter_teacher(self, idx, data_batch) -> None:
        self.runner.call_hook('before_val_iter', batch_idx=idx, data_batch=data_batch)
        with autocast(enabled=self.fp16):
            outputs = self.distiller_model.teacher_val_step(data_batch)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(
            'after_val_iter', batch_idx=idx, data_batch=data_batch, outputs=outputs
        )
