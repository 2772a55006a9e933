"""A trained network and its outputs over a dataset split, for the tools under tools/analysis/.

The analysis tools take a training config and a checkpoint as users have them
after ``tools/train.py``: an mmpretrain classifier run, or an mmrazor
distillation run (``SingleTeacherDistill``, ``MultiTeacherDistill``,
``CrossModalDistill``: the config's ``model.architecture`` is the student and
its weights sit under ``architecture.`` in the checkpoint). Only the classifier
is built (a distiller's teachers and their checkpoints are not needed), with
the data preprocessor the run used, and run in eval mode over the config's
test (or training) split through the config's *test* pipeline, in dataset
order.
"""

import argparse
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, MODELS, DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint

# what collect_outputs can return besides 'labels' and 'indices'
OUTPUTS = ('logits', 'neck', 'backbone')


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of every tool that runs trained networks.

    They are --batch-size, --device and --cfg-options.
    """
    parser.add_argument('--batch-size', type=int, default=64, help='images per forward pass')
    parser.add_argument(
        '--device',
        help='where the networks run, e.g. cpu, cuda:0 (default: cuda if torch sees one, else cpu)',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override keys of every config, e.g. test_dataloader.dataset.indices=200',
    )


def default_device(device: Optional[str]) -> str:
    """``device``, or cuda where torch sees a GPU, else cpu."""
    return device or ('cuda' if torch.cuda.is_available() else 'cpu')


def config_checkpoint_pairs(
    parser: argparse.ArgumentParser, paths: Sequence[str], what: str = 'CONFIG CKPT'
) -> List[Tuple[str, str]]:
    """Consecutive (config, checkpoint) pairs of a positional list.

    An odd number of paths is a usage error (one pair is incomplete).
    """
    if len(paths) % 2:
        parser.error(f'give {what} pairs; got {len(paths)} paths: {paths}')
    return list(zip(paths[::2], paths[1::2]))


def student_of(model_cfg: ConfigDict) -> Tuple[ConfigDict, str]:
    """The classifier of a model config and the prefix of its weights in the run's checkpoint.

    A distiller's (``model.architecture``) is its student, under
    ``architecture.``; a classifier config's model is the classifier itself.
    """
    if 'architecture' in model_cfg:
        return model_cfg.architecture, 'architecture.'
    return model_cfg, ''


def read_state_dict(checkpoint: str) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of an mmengine checkpoint (path or URL), or the file's dict itself."""
    state = _load_checkpoint(checkpoint, map_location='cpu')
    return state.get('state_dict', state)


def load_weights_under(
    module: torch.nn.Module,
    state: Dict[str, torch.Tensor],
    prefix: str,
    checkpoint: str,
    what: str,
    hint: str = '',
) -> None:
    """Load ``module`` strictly from the entries of ``state`` whose keys start with ``prefix``.

    A checkpoint of another config is the usual mistake, so both failures name
    the checkpoint and the prefix: a ``KeyError`` listing the checkpoint's
    top-level keys when nothing starts with ``prefix`` (unless ``module`` has
    no weights at all), a ``RuntimeError`` with torch's list of missing and
    unexpected keys when the weights do not fit.

    Args:
        module (torch.nn.Module): The network to load.
        state (dict): The checkpoint's ``state_dict``.
        prefix (str): What the module's keys start with in ``state``, e.g.
            ``'architecture.'``.
        checkpoint (str): The checkpoint's path, for the messages.
        what (str): The module's name in the config, for the messages.
        hint (str): Where the weights of each kind of run are, appended to
            the ``KeyError``. Defaults to ''.
    """
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights and module.state_dict():
        found = sorted({k.split('.', 1)[0] for k in state})
        raise KeyError(
            f"{checkpoint} holds no '{prefix}*' weights (its top-level keys: {found}); is it a "
            f'checkpoint of this config? {hint}'.rstrip()
        )
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise RuntimeError(
            f"{checkpoint}: the '{prefix}*' weights do not fit the config's {what} "
            f'(wrong config for this checkpoint?):\n{err}'
        ) from None


def _scope(cfg: Config) -> str:
    return cfg.get('default_scope') or 'mmpretrain'


def build_trained_classifier(cfg: Config, checkpoint: str, device: str = 'cpu') -> torch.nn.Module:
    """Build ``cfg``'s classifier (a distiller's student) with the weights of ``checkpoint``.

    The network is returned on ``device``, in eval mode.

    The data preprocessor is the one the run fed the network: the model's own,
    else the config's top-level ``data_preprocessor`` (as the Runner injects
    it), else the student's.
    """
    student, prefix = student_of(cfg.model)
    student = student.copy()
    preprocessor = (
        cfg.model.get('data_preprocessor')
        or cfg.get('data_preprocessor')
        or student.get('data_preprocessor')
    )
    if preprocessor:
        student['data_preprocessor'] = preprocessor
    with DefaultScope.overwrite_default_scope(_scope(cfg)):
        model = MODELS.build(student)
    if not all(hasattr(model, name) for name in ('backbone', 'head', 'extract_feat')):
        raise ValueError(
            'the analysis tools read image classifiers (an mmpretrain ImageClassifier, or a '
            'distiller whose model.architecture is one); this config builds a '
            f'{type(model).__name__}'
        )
    load_weights_under(
        model,
        read_state_dict(checkpoint),
        prefix,
        checkpoint,
        what='classifier',
        hint="A distiller's student is under 'architecture.', a classifier's weights under "
        "'backbone.', 'neck.', 'head.'",
    )
    return model.to(device).eval()


def _with_pipeline(dataset_cfg: dict, pipeline) -> dict:
    """``dataset_cfg`` with its images' pipeline replaced (through dataset wrappers)."""
    dataset_cfg = dict(dataset_cfg)
    if 'pipeline' in dataset_cfg or 'dataset' not in dataset_cfg:
        dataset_cfg['pipeline'] = pipeline
    else:
        dataset_cfg['dataset'] = _with_pipeline(dataset_cfg['dataset'], pipeline)
    return dataset_cfg


def split_dataset_cfg(cfg: Config, split: str = 'test') -> dict:
    """The dataset dict of ``cfg``'s test (else val) or train split, with the test pipeline."""
    test_loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not test_loader:
        raise ValueError(
            'the config defines no test_dataloader (nor val_dataloader): its test pipeline '
            'is how the analysis tools feed the network'
        )
    if split == 'test':
        return dict(test_loader['dataset'])
    if split == 'train':
        if not cfg.get('train_dataloader'):
            raise ValueError('the config defines no train_dataloader; use --split test')
        pipeline = test_loader['dataset'].get('pipeline')
        if pipeline is None:
            raise ValueError(
                "the config's test dataset has no pipeline to apply to the training split"
            )
        return _with_pipeline(cfg.train_dataloader['dataset'], pipeline)
    raise ValueError(f"split must be 'test' or 'train', got {split!r}")


def build_split(cfg: Config, split: str = 'test'):
    """The built dataset of :func:`split_dataset_cfg`."""
    with DefaultScope.overwrite_default_scope(_scope(cfg)):
        return DATASETS.build(split_dataset_cfg(cfg, split))


def _last(features):
    """The last of a tuple of feature maps (mmpretrain backbones and necks return tuples)."""
    return features[-1] if isinstance(features, (tuple, list)) else features


@torch.no_grad()
def collect_outputs(
    model: torch.nn.Module,
    dataset,
    indices: Optional[Sequence[int]] = None,
    outputs: Sequence[str] = ('logits',),
    batch_size: int = 64,
) -> Dict[str, np.ndarray]:
    """Run ``model`` over ``dataset`` (the samples ``indices``, default all, in that order).

    Returns numpy arrays: ``labels`` (N,) and ``indices`` (N,), and for each
    requested output: ``logits`` (N, C: the head's class scores), ``neck``
    (N, D: the pooled features the head reads) or ``backbone`` (N, D': the
    backbone's last feature map, flattened).
    """
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f'unknown outputs {sorted(unknown)}; choose from {OUTPUTS}')
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    collected = {name: [] for name in outputs}
    labels = []
    for start in range(0, len(indices), batch_size):
        batch = pseudo_collate([dataset[i] for i in indices[start : start + batch_size]])
        data = model.data_preprocessor(batch, False)
        backbone = model.extract_feat(data['inputs'], stage='backbone')
        neck = model.neck(backbone) if model.with_neck else backbone
        if 'backbone' in outputs:
            collected['backbone'].append(_last(backbone).flatten(1))
        if 'neck' in outputs:
            collected['neck'].append(_last(neck).flatten(1))
        if 'logits' in outputs:
            collected['logits'].append(model.head(neck))
        for sample in data['data_samples']:
            if 'gt_label' not in sample:
                raise ValueError(
                    'the dataset gives no gt_label: the analysis tools need a labelled split'
                )
            labels.append(int(sample.gt_label[0]))
    result = {name: torch.cat(chunks).float().cpu().numpy() for name, chunks in collected.items()}
    result['labels'] = np.asarray(labels, dtype=np.int64)
    result['indices'] = np.asarray(indices, dtype=np.int64)
    return result


def class_names(dataset, num_classes: int) -> Sequence[str]:
    """The dataset's class names if it names at least ``num_classes``, else '0', '1', ... ."""
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if classes and len(classes) >= num_classes:
        return [str(c) for c in classes]
    return [str(c) for c in range(num_classes)]
