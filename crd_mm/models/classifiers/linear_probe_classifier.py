"""An image classifier whose backbone and neck come frozen from a trained model: a linear probe."""

from mmengine.runner.checkpoint import _load_checkpoint
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS


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
        state = _load_checkpoint(checkpoint, map_location='cpu')
        state = state.get('state_dict', state)
        for name in ('backbone', 'neck'):
            module = getattr(self, name, None)
            if module is None:
                continue
            prefix = f'{checkpoint_prefix}{name}.'
            weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not weights and module.state_dict():
                found = sorted({k.split('.', 1)[0] for k in state})
                raise KeyError(
                    f"{checkpoint} holds no '{prefix}*' weights (its top-level keys: {found}); "
                    "is it a checkpoint of this config? A distiller's student is under "
                    "'architecture.', a classifier's backbone under 'backbone.'"
                )
            try:
                module.load_state_dict(weights, strict=True)
            except RuntimeError as err:
                raise RuntimeError(
                    f"{checkpoint}: the '{prefix}*' weights do not fit the config's {name}:\n{err}"
                ) from None
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
