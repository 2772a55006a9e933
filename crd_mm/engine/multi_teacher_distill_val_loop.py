"""Validation of an ensemble distiller: the student, then every teacher, on the same data."""

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import ValLoop, autocast
from mmrazor.registry import LOOPS
from torch import nn


@LOOPS.register_module()
class MultiTeacherDistillValLoop(ValLoop):
    """``ValLoop`` for ``MultiTeacherDistill`` that also scores each teacher.

    The student is validated exactly as by mmengine's ``ValLoop`` (its metrics
    keep their names, so checkpoint selection and logs compare with a student
    trained alone). Then each teacher predicts on the same batches, after the
    algorithm's data preprocessing (what it sees in training), and its
    metrics are logged as ``teacher.<name>.<metric>``, e.g.
    ``teacher.resnet20.accuracy/top1``: a teacher whose checkpoint was not the
    trained one shows at once.
    """

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(getattr(model, 'teachers', None), nn.ModuleDict):
            raise TypeError(
                'MultiTeacherDistillValLoop validates a MultiTeacherDistill model (named '
                f"teachers); got {type(model).__name__}. Use mmengine's ValLoop (val_cfg=dict()) "
                "or mmrazor's SingleTeacherDistillValLoop for one teacher"
            )
        self.distiller_model = model

    def run(self) -> dict:
        """Validate the student (as ``ValLoop``), then each teacher.

        One ``after_val_epoch`` call carries all metrics.
        """
        self.runner.call_hook('before_val')
        self.runner.call_hook('before_val_epoch')
        self.runner.model.eval()
        self.val_loss.clear()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        for name, teacher in self.distiller_model.teachers.items():
            for data_batch in self.dataloader:
                self.run_teacher_iter(teacher, data_batch)
            teacher_metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
            metrics.update(
                {f'teacher.{name}.{key}': value for key, value in teacher_metrics.items()}
            )
        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics

    @torch.no_grad()
    def run_teacher_iter(self, teacher, data_batch) -> None:
        data = self.distiller_model.data_preprocessor(data_batch, False)
        with autocast(enabled=self.fp16):
            outputs = teacher(**data, mode='predict')
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
