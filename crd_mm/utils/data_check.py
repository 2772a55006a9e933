"""Fail early, and helpfully, when a config's dataset is not on disk.

Without this check a missing dataset surfaces deep inside the Runner, after
the models (and possibly a teacher checkpoint) have been built, as an
assertion or a "Found 0 files" error. :func:`check_data` inspects the dataset
dicts of a config's dataloaders before anything is built and raises a
``FileNotFoundError`` that names the missing path, shows the layout the
dataset type reads and says how to fix it. Dataset types it does not know
(e.g. ``SklearnDigits``, which carries its data in memory) and remote storage
(``s3://...`` paths or non-local ``backend_args``) are not checked.
"""

import os.path as osp
from typing import Iterable, List, Optional, Tuple

DEFAULT_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')

IMAGENET_LAYOUT = """\
{root}
├── meta
│   ├── train.txt      (optional: "<image path> <label>" per line)
│   └── val.txt
├── train
│   ├── n01440764
│   │   ├── n01440764_10026.JPEG
│   │   └── ...
│   └── ...            (1000 class folders)
└── val
    ├── ILSVRC2012_val_00000001.JPEG   (labels in meta/val.txt)
    └── ..."""

CIFAR_LAYOUT = """\
{root}
└── {folder}
    ├── {files}
    └── {meta}"""

COCO_LAYOUT = """\
{root}
├── annotations
│   ├── instances_train2017.json
│   └── instances_val2017.json
├── train2017
│   └── *.jpg
└── val2017
    └── *.jpg"""

FOLDER_LAYOUT = """\
{root}
├── class_x
│   ├── xxx.png
│   └── ...
└── class_y
    └── ...
(or any image folder plus an annotation file of "<image path> <label>" lines)"""

CIFAR_FILES = {
    'CIFAR10': (
        'cifar-10-batches-py',
        'data_batch_1 ... data_batch_5, test_batch',
        'batches.meta',
        'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
    ),
    'CIFAR100': (
        'cifar-100-python',
        'train, test',
        'meta',
        'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
    ),
}


def _type_name(dataset: dict) -> str:
    """The dataset's class name without a registry scope ('mmdet.CocoDataset' -> 'CocoDataset')."""
    type_ = dataset.get('type', '')
    name = type_ if isinstance(type_, str) else getattr(type_, '__name__', '')
    return name.rsplit('.', 1)[-1]


def _is_remote(dataset: dict, *paths: str) -> bool:
    backend = dataset.get('backend_args') or {}
    if backend.get('backend', 'local') != 'local':
        return True
    return any('://' in str(p) for p in paths if p)


def _join(root: Optional[str], path: str) -> str:
    """Join the way mmengine's BaseDataset does: absolute paths ignore ``data_root``."""
    if not root or osp.isabs(path):
        return path
    return osp.join(root, path)


def _prefix(dataset: dict, key: str) -> str:
    prefix = dataset.get('data_prefix', '')
    if isinstance(prefix, dict):
        return prefix.get(key, '') or ''
    return prefix or ''


def _missing(path: str, what: str, layout: str, fix: str) -> FileNotFoundError:
    return FileNotFoundError(
        f'{what} not found: {osp.abspath(path)}\nExpected layout:\n{layout}\nFix: {fix}'
    )


def _redirect_hint(loader: str) -> str:
    return (
        f'or point the config at your copy, e.g. --cfg-options '
        f'{loader}.dataset.data_root=/path/to/data'
    )


def _check_imagenet(dataset: dict, loader: str) -> Optional[FileNotFoundError]:
    root = dataset.get('data_root', '') or ''
    split = dataset.get('split', '')
    folder = _join(root, _prefix(dataset, 'img_path') or split)
    ann_file = dataset.get('ann_file', '')
    layout = IMAGENET_LAYOUT.format(root=root or '<data_root>')
    fix = (
        'download ILSVRC2012 from https://image-net.org, unpack it in this layout and '
        f'link it there (ln -s /path/to/imagenet {root or "<data_root>"}), '
        + _redirect_hint(loader)
    )
    if root and not osp.isdir(root):
        return _missing(root, f'ImageNet ({loader})', layout, fix)
    if not osp.isdir(folder):
        return _missing(folder, f'ImageNet image folder ({loader})', layout, fix)
    if ann_file and not osp.isfile(_join(root, ann_file)):
        return _missing(_join(root, ann_file), f'ImageNet annotation file ({loader})', layout, fix)
    return None


def _check_cifar(name: str, dataset: dict, loader: str) -> Optional[FileNotFoundError]:
    if dataset.get('download', True):
        return None  # mmpretrain downloads it
    root = _join(dataset.get('data_root', '') or '', _prefix(dataset, 'root'))
    folder, files, meta, url = CIFAR_FILES[name]
    layout = CIFAR_LAYOUT.format(root=root, folder=folder, files=files, meta=meta)
    fix = (
        f'download {url} and unpack it with '
        f'`mkdir -p {root} && tar -xzf {osp.basename(url)} -C {root}`, '
        f'or set {loader}.dataset.download=True, ' + _redirect_hint(loader)
    )
    path = osp.join(root, folder)
    if not osp.isdir(path):
        return _missing(path, f'{name} ({loader})', layout, fix)
    return None


def _check_coco(dataset: dict, loader: str) -> Optional[FileNotFoundError]:
    root = dataset.get('data_root', '') or ''
    layout = COCO_LAYOUT.format(root=root or '<data_root>')
    fix = (
        'download train2017/val2017 images and the 2017 annotations from '
        f'https://cocodataset.org and unpack them there (or ln -s /path/to/coco '
        f'{root or "<data_root>"}), ' + _redirect_hint(loader)
    )
    ann_file = dataset.get('ann_file', '')
    checks: List[Tuple[str, str, bool]] = [(root, 'COCO data root', True)] if root else []
    if ann_file:
        checks.append((_join(root, ann_file), 'COCO annotation file', False))
    img = _prefix(dataset, 'img')
    if img:
        checks.append((_join(root, img), 'COCO image folder', True))
    for path, what, is_dir in checks:
        if not (osp.isdir(path) if is_dir else osp.isfile(path)):
            return _missing(path, f'{what} ({loader})', layout, fix)
    return None


def _check_custom(dataset: dict, loader: str) -> Optional[FileNotFoundError]:
    root = dataset.get('data_root', '') or ''
    folder = _join(root, _prefix(dataset, 'img_path'))
    ann_file = dataset.get('ann_file', '')
    layout = FOLDER_LAYOUT.format(root=folder or '<data_root>')
    fix = 'put the images there, ' + _redirect_hint(loader)
    if folder and not osp.isdir(folder):
        return _missing(folder, f'image folder ({loader})', layout, fix)
    if ann_file and not osp.isfile(_join(root, ann_file)):
        return _missing(_join(root, ann_file), f'annotation file ({loader})', layout, fix)
    return None


def _datasets(dataset) -> Iterable[dict]:
    """The dataset dict and, through wrappers (RepeatDataset, ConcatDataset...), those it wraps."""
    if not isinstance(dataset, dict):
        return
    yield dataset
    inner = dataset.get('dataset')
    if inner is not None:
        yield from _datasets(inner)
    for item in dataset.get('datasets') or ():
        yield from _datasets(item)


def check_dataset(dataset: dict, loader: str = 'dataset') -> None:
    """Raise ``FileNotFoundError`` if the files ``dataset`` (a config dict) reads are missing.

    Args:
        dataset (dict): A dataset config, e.g. ``cfg.train_dataloader.dataset``.
        loader (str): The dataloader it belongs to, named in the message.
    """
    for ds in _datasets(dataset):
        name = _type_name(ds)
        paths = (
            ds.get('data_root'),
            ds.get('ann_file'),
            _prefix(ds, 'img_path'),
            _prefix(ds, 'img'),
            _prefix(ds, 'root'),
        )
        if _is_remote(ds, *paths):
            continue
        if name == 'ImageNet':
            error = _check_imagenet(ds, loader)
        elif name in CIFAR_FILES:
            error = _check_cifar(name, ds, loader)
        elif name == 'CocoDataset':
            error = _check_coco(ds, loader)
        elif name == 'CustomDataset':
            error = _check_custom(ds, loader)
        else:
            continue
        if error is not None:
            raise error


def check_data(cfg, loaders: Iterable[str] = DEFAULT_LOADERS) -> None:
    """Check the datasets of the named dataloaders of ``cfg`` before a Runner is built.

    Args:
        cfg (Config | dict): The full config.
        loaders (Iterable[str]): Dataloader keys to check; missing or ``None``
            ones (e.g. ``val_dataloader`` with ``--no-validate``) are skipped.
            ``tools/train.py`` checks the train and val loaders,
            ``tools/test.py`` the test loader.

    Raises:
        FileNotFoundError: naming the missing path, the expected layout and the fix.
    """
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if loader_cfg:
            check_dataset(loader_cfg.get('dataset'), loader)
