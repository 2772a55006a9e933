"""A tiny generated CIFAR-100 archive and a reader for it, for running the CIFAR recipes.

mmpretrain's ``CIFAR100`` refuses any archive but the real one: it checks the
md5 sum of every file and has no option to skip that. ``UncheckedCIFAR100``
is the same reader with those sums unset (``CIFAR10._check_integrity`` and
``_load_meta`` skip a ``None`` sum), so a recipe keeps its pipeline, split
and loader settings when a test points it at a generated archive with
``--cfg-options custom_imports.imports=[crd_mm,tests.fake_cifar]
train_dataloader.dataset.type=UncheckedCIFAR100``.
"""

import os
import os.path as osp
import pickle

import numpy as np
from mmpretrain.datasets import CIFAR100
from mmpretrain.registry import DATASETS


@DATASETS.register_module()
class UncheckedCIFAR100(CIFAR100):
    """mmpretrain's CIFAR100 without the md5 checks of the official files."""

    train_list = [['train', None]]
    test_list = [['test', None]]
    meta = dict(CIFAR100.meta, md5=None)


def write_fake_cifar100(data_root, num_train=4, num_test=2, num_classes=2, seed=0):
    """Write ``data_root/cifar-100-python/{train,test,meta}`` as CIFAR-100's python pickles.

    Same keys, dtypes and layout as the official archive: ``data`` is an
    (N, 3072) uint8 array of channel-major 32x32 RGB images, ``fine_labels``
    and ``coarse_labels`` are lists of ints; ``meta`` lists the class names.
    Labels cycle over the first ``num_classes`` classes. Returns ``data_root``.
    """
    rng = np.random.default_rng(seed)
    folder = osp.join(data_root, UncheckedCIFAR100.base_folder)
    os.makedirs(folder, exist_ok=True)
    for split, num in (('train', num_train), ('test', num_test)):
        labels = [i % num_classes for i in range(num)]
        entry = {
            'filenames': [f'{split}_{i}.png' for i in range(num)],
            'batch_label': f'{split} batch',
            'fine_labels': labels,
            'coarse_labels': labels,
            'data': rng.integers(0, 256, size=(num, 3 * 32 * 32), dtype=np.uint8),
        }
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump(entry, f, protocol=2)
    meta = {
        'fine_label_names': list(CIFAR100.METAINFO['classes']),
        'coarse_label_names': [f'superclass_{i}' for i in range(20)],
    }
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return str(data_root)
