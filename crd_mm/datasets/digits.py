"""scikit-learn's bundled handwritten digits as an mmpretrain dataset (the demo's data)."""

from typing import List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS


@DATASETS.register_module()
class SklearnDigits(BaseDataset):
    """The 1,797 8x8 grey-scale digits that ship with scikit-learn, 10 classes.

    No download and no files: ``sklearn.datasets.load_digits`` reads them from
    the installed package, so the demo runs offline. Images are scaled from
    0..16 to 0..255 and stacked to three channels (uint8, 8x8x3, in ``img``
    with ``img_shape``/``ori_shape`` set as an image loader would), so
    mmpretrain's transforms and ``PackInputs`` apply unchanged. The split is a
    fixed stratified one: in each class, samples 0, ``test_every``,
    2 * ``test_every``, ... (in scikit-learn's order) are the test split and
    the rest the training split; with the default 5 that is 1,433 training and
    364 test images. ``samples_per_class`` keeps only the first n samples of
    each class of the split: a small, balanced labelled fraction (the demo's
    students learn from 10 per class while their teacher saw all 1,433). The
    usual ``BaseDataset`` options (``pipeline``, ``indices`` for a subset,
    ...) pass through.

    Args:
        split (str): 'train' or 'test'.
        test_every (int): one sample in ``test_every`` of each class is a test
            sample; at least 2. Defaults to 5.
        samples_per_class (int, optional): keep the first n samples of each
            class of the split; None keeps them all. Defaults to None.
    """

    METAINFO = dict(classes=tuple(str(d) for d in range(10)))

    def __init__(
        self,
        split: str = 'train',
        test_every: int = 5,
        samples_per_class: Optional[int] = None,
        **kwargs,
    ):
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if int(test_every) != test_every or test_every < 2:
            raise ValueError(f'test_every must be an integer >= 2, got {test_every!r}')
        if samples_per_class is not None and (
            int(samples_per_class) != samples_per_class or samples_per_class < 1
        ):
            raise ValueError(
                f'samples_per_class must be a positive integer or None, got {samples_per_class!r}'
            )
        self.split = split
        self.test_every = int(test_every)
        self.samples_per_class = samples_per_class
        kwargs.setdefault('ann_file', '')
        super().__init__(**kwargs)

    def load_data_list(self) -> List[dict]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        data_list = []
        seen = np.zeros(len(self.METAINFO['classes']), dtype=int)
        kept = np.zeros_like(seen)
        for image, label in zip(images, digits.target):
            is_test = seen[label] % self.test_every == 0
            seen[label] += 1
            if is_test != (self.split == 'test'):
                continue
            if self.samples_per_class is None or kept[label] < self.samples_per_class:
                kept[label] += 1
                data_list.append(
                    dict(
                        img=np.repeat(image[..., None], 3, axis=2),
                        img_shape=image.shape,
                        ori_shape=image.shape,
                        gt_label=int(label),
                    )
                )
        return data_list
