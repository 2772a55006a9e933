"""An image classifier whose backbone and neck come frozen from a trained model: a linear probe."""

from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS

from crd_mm.utils.analysis import load_weights_under, read_state_dict


@MODELS.register_module()
class LinearProbeClassifier(ImageClassifier):
    """``ImageClassifier`` that trains only its head on a frozen, pretrained backbone and neck.

    The transfer measurement of CRD (Tian et al. 2020, after CMC): a
    representation is judged by how well a linear classifier on its frozen
    features does on another dataset. The backbone and neck weights (and
    BatchNorm statistics) are read from ``checkpoint`` under
    ``checkpoint_prefix`` ('' for a classifier's checkpoint,
    'architecture.' for the student of an mmrazor distiller), never receive
    a gradient and stay in eval mode when the runner calls ``train()``, so
    only the head (a ``LinearClsHead``) learns.

    Args:
        checkpoint (str): path or URL of the trained model's checkpoint.
        checkpoint_prefix (str): prefix of the backbone's and neck's keys in
            the checkpoint's ``state_dict``. Defaults to ''.
        **kwargs: the arguments of ``ImageClassifier`` (``backbone``,
            ``neck``, ``head``, ``data_preprocessor``, ...).
    """

    def __init__(self, checkpoint: str, checkpoint_prefix: str = '', **kwargs) -> None:
        super().__init__(**kwargs)
        state = read_state_dict(checkpoint)
        for name in ('backbone', 'neck'):
            module = getattr(self, name, None)
            if module is None:
                continue
            load_weights_under(
                module,
                state,
                f'{checkpoint_prefix}{name}.',
                checkpoint,
                what=name,
                hint="A distiller's student is under 'architecture.', a classifier's backbone "
                "under 'backbone.'",
            )
            module.requires_grad_(False)
            module._is_init = True  # keep the loaded weights through init_weights()
        self.train()

    def train(self, mode: bool = True) -> 'LinearProbeClassifier':
        """Set the mode of the head; the frozen backbone and neck always stay in eval mode."""
        super().train(mode)
        for module in (self.backbone, getattr(self, 'neck', None)):
            if module is not None:
                module.eval()
        return self
