"""SklearnDigits: scikit-learn's digits as an mmpretrain dataset (the demo's data)."""

import numpy as np
import pytest
import torch
from mmpretrain.registry import DATASETS
from sklearn.datasets import load_digits

import crd_mm  # noqa: F401  (registers SklearnDigits)
from crd_mm.datasets import SklearnDigits


def build(**kwargs):
    return DATASETS.build(dict(type='SklearnDigits', _scope_='mmpretrain', **kwargs))


def test_splits_are_stratified_disjoint_and_cover_the_set():
    digits = load_digits()
    train, test = build(split='train'), build(split='test')
    assert (len(train), len(test)) == (1433, 364)
    class_sizes = np.bincount(digits.target, minlength=10)
    test_sizes = np.bincount(test.get_gt_labels(), minlength=10)
    # one image in five of every class, counted from the class's first
    np.testing.assert_array_equal(test_sizes, -(-class_sizes // 5))
    np.testing.assert_array_equal(
        np.bincount(train.get_gt_labels(), minlength=10) + test_sizes, class_sizes
    )

    # every image of the set lands in exactly one split, with its label
    scaled = np.round(digits.images * 255 / 16).astype(np.uint8)
    source = sorted((img.tobytes(), int(y)) for img, y in zip(scaled, digits.target))
    ours = sorted(
        (d['img'][..., 0].tobytes(), d['gt_label'])
        for ds in (train, test)
        for d in ds.load_data_list()
    )
    assert ours == source


def test_samples_per_class_keeps_the_first_n_images_of_each_class_of_the_split():
    digits = load_digits()
    scaled = np.round(digits.images * 255 / 16).astype(np.uint8)
    small = build(split='train', samples_per_class=3)
    assert len(small) == 30
    np.testing.assert_array_equal(np.bincount(small.get_gt_labels(), minlength=10), [3] * 10)
    # the training split of a class skips its 1st, 6th, ... image (the test split): 2nd, 3rd, 4th
    expected = sorted(
        (scaled[np.flatnonzero(digits.target == c)[k]].tobytes(), c)
        for c in range(10)
        for k in (1, 2, 3)
    )
    ours = sorted((d['img'][..., 0].tobytes(), d['gt_label']) for d in small.load_data_list())
    assert ours == expected


def test_images_are_uint8_three_channel_scaled_to_255():
    digits = load_digits()
    test = build(split='test')
    info = test.get_data_info(0)
    img = info['img']
    assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    assert info['img_shape'] == info['ori_shape'] == (8, 8)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()
    # the first test image is scikit-learn's first image of class 0
    first = digits.images[np.flatnonzero(digits.target == 0)[0]]
    np.testing.assert_array_equal(img[..., 0], np.round(first * 255 / 16))
    assert info['gt_label'] == 0
    assert max(d['img'].max() for d in test.load_data_list()) == 255
    assert test.metainfo['classes'] == tuple('0123456789')


def test_test_every_sets_the_split_ratio():
    half = build(split='test', test_every=2)
    sizes = np.bincount(load_digits().target, minlength=10)
    assert len(half) == int((-(-sizes // 2)).sum())
    assert len(half) + len(build(split='train', test_every=2)) == 1797


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(split='val'), "split must be 'train' or 'test'"),
        (dict(test_every=1), 'test_every must be an integer >= 2'),
        (dict(test_every=2.5), 'test_every must be an integer >= 2'),
        (dict(samples_per_class=0), 'samples_per_class must be a positive integer or None'),
        (dict(samples_per_class=1.5), 'samples_per_class must be a positive integer or None'),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SklearnDigits(**kwargs)


def test_pipeline_subset_and_sample_index():
    """mmpretrain transforms apply as is; `indices` takes a subset (the demo's smoke run)."""
    pipeline = [dict(type='Resize', scale=16), dict(type='PackInputs')]
    subset = build(split='train', indices=96, pipeline=pipeline)
    assert len(subset) == 96
    assert set(subset.get_gt_labels()) == set(range(10))
    sample = subset[5]
    assert sample['inputs'].shape == (3, 16, 16) and sample['inputs'].dtype == torch.uint8
    # CRD's memory bank addresses samples by this index
    assert sample['data_samples'].sample_idx == 5
    assert int(sample['data_samples'].gt_label) == subset.get_gt_labels()[5]
