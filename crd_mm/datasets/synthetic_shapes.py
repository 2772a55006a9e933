"""SyntheticShapes: a bundled segmentation set of coloured shapes on textured backgrounds.

No download: images and masks are generated deterministically from a seed into
a cache folder the first time a split is used (PNG files, so mmseg's usual
``LoadImageFromFile`` / ``LoadAnnotations`` pipeline reads them), and reused
afterwards. Importing this module imports mmseg; ``import crd_mm`` does not
import it (configs list ``crd_mm.datasets.synthetic_shapes`` in
``custom_imports``).
"""

import json
import os
import os.path as osp
import shutil
import tempfile

import mmcv
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

CLASSES = ('background', 'circle', 'square', 'triangle')
PALETTE = [[0, 0, 0], [220, 20, 60], [0, 128, 255], [255, 200, 0]]
SPLIT_STREAMS = {'train': 0, 'val': 1, 'test': 2}
DEFAULT_SIZES = {'train': 256, 'val': 64, 'test': 64}
GENERATOR_VERSION = 2  # bump when the drawing changes: caches of older versions are rebuilt


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float image: a random base colour modulated by random stripes and noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.empty((size, size, 3))
    base = rng.uniform(40, 200, 3)
    for channel in range(3):
        freq, angle, phase = rng.uniform(2, 8), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        image[..., channel] = base[channel] + 30 * wave
    return image + rng.normal(0, 12, (size, size, 3))


def shape_mask(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """A boolean mask of one random circle (1), axis-aligned square (2) or triangle (3)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    radius = rng.uniform(0.15, 0.3) * size
    cy, cx = rng.uniform(radius, size - radius, 2)
    if kind == 1:
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if kind == 2:
        return (np.abs(x - cx) <= radius * 0.85) & (np.abs(y - cy) <= radius * 0.85)
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
    corners = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
    inside = np.ones((size, size), bool)
    for i in range(3):  # on the inner side of every edge (counter-clockwise corners)
        (x0, y0), (x1, y1) = corners[i], corners[(i + 1) % 3]
        inside &= (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0
    return inside


def draw_sample(rng: np.random.Generator, size: int):
    """One (BGR uint8 image, uint8 mask) pair with one to three shapes; later shapes occlude."""
    image = textured_background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(1, 4))
        region = shape_mask(rng, kind, size)
        colour = rng.uniform(0, 255, 3)
        shading = rng.normal(0, 8, (size, size, 1))
        image[region] = colour + shading[region]
        mask[region] = kind
    return np.clip(image, 0, 255).astype(np.uint8), mask


def generate_split(folder: str, num_images: int, size: int, seed: int) -> None:
    """Write ``images/*.png`` and ``masks/*.png`` into ``folder`` unless an identical set is there.

    Generated in a temporary folder beside it and renamed into place, so that
    concurrent runs never read a half-written set.
    """
    recipe = dict(num_images=num_images, size=size, seed=seed, version=GENERATOR_VERSION)
    marker = osp.join(folder, 'recipe.json')
    if osp.exists(marker):
        with open(marker) as f:
            if json.load(f) == recipe:
                return
        shutil.rmtree(folder, ignore_errors=True)
    parent = osp.dirname(osp.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.shapes-', dir=parent)
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        image, mask = draw_sample(rng, size)
        mmcv.imwrite(image, osp.join(staging, 'images', f'{index:05d}.png'))
        mmcv.imwrite(mask, osp.join(staging, 'masks', f'{index:05d}.png'))
    with open(osp.join(staging, 'recipe.json'), 'w') as f:
        json.dump(recipe, f)
    try:
        os.rename(staging, folder)
    except OSError:  # another process finished first: its set is identical
        shutil.rmtree(staging, ignore_errors=True)


@DATASETS.register_module()
class SyntheticShapes(BaseSegDataset):
    """Coloured circles, squares and triangles on textured backgrounds, with their masks.

    Four classes (background, circle, square, triangle). A shape's colour is
    random, so the class is told by its form; shapes may occlude each other.
    Each split is generated from ``seed`` (train, val and test draw from
    different streams) into ``data_root/<split>-<recipe>/`` on first use.

    Args:
        split (str): 'train', 'val' or 'test'. Defaults to 'train'.
        num_images (int, optional): images in the split; None: 256 for train,
            64 otherwise. Defaults to None.
        image_size (int): side of the square images. Defaults to 64.
        seed (int): generation seed. Defaults to 0.
        data_root (str): cache folder. Defaults to 'data/synthetic_shapes'.
        **kwargs: the other arguments of mmseg's ``BaseSegDataset`` (pipeline, ...).
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(
        self,
        split: str = 'train',
        num_images=None,
        image_size: int = 64,
        seed: int = 0,
        data_root: str = 'data/synthetic_shapes',
        **kwargs,
    ):
        if split not in SPLIT_STREAMS:
            raise ValueError(f'split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}')
        num_images = DEFAULT_SIZES[split] if num_images is None else num_images
        if num_images < 1 or image_size < 16:
            raise ValueError(
                f'SyntheticShapes needs num_images >= 1 and image_size >= 16, got {num_images} '
                f'and {image_size}'
            )
        folder = osp.join(data_root, f'{split}-n{num_images}-px{image_size}-seed{seed}')
        generate_split(folder, num_images, image_size, seed * 3 + SPLIT_STREAMS[split])
        super().__init__(
            data_root=folder,
            data_prefix=dict(img_path='images', seg_map_path='masks'),
            img_suffix='.png',
            seg_map_suffix='.png',
            reduce_zero_label=False,
            **kwargs,
        )
