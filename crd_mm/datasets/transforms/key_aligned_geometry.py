"""One drawn crop, flip or resize applied to ``img`` and to other images stored with the sample."""

import random
from typing import Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform, Compose
from mmpretrain.registry import TRANSFORMS

# results[ALIGNED_FIELD][key]: the geometry of 'img' when KeyAlignedGeometry last aligned key
ALIGNED_FIELD = 'key_aligned_geometry'


def _img_geometry(results: dict) -> dict:
    """What the pipeline records about the geometry of ``img``: its size and mmcv's flip."""
    return dict(
        shape=tuple(np.shape(results['img'])[:2]),
        flip=bool(results.get('flip', False)),
        flip_direction=results.get('flip_direction'),
    )


def _recorded_geometry(results: dict) -> dict:
    """The size of ``img`` and what mmcv's geometric transforms record about their draws."""
    recorded = {k: results[k] for k in ('flip', 'flip_direction', 'scale_factor') if k in results}
    return dict(recorded, shape=tuple(np.shape(results['img'])[:2]))


def geometry_mismatch(results: dict, key: str) -> Optional[str]:
    """Why ``results[key]`` may no longer show the pixels of ``results['img']``; None if aligned.

    Detects what the pipeline records: a different height or width of ``key``
    and ``img`` (a crop or resize of ``img`` alone), mmcv's ``flip=True`` when
    ``key`` was not flipped with it by ``KeyAlignedGeometry``, and any change
    of ``img``'s size or flip after ``KeyAlignedGeometry`` aligned ``key``. A
    ``key`` of another size than ``img`` is accepted only while ``img`` is
    still as loaded (its size equals ``ori_shape``, no flip, no alignment yet):
    the second modality may have its own resolution before any geometry.
    Not detectable: a transform of ``img`` alone that keeps its size and
    records nothing (e.g. ``RandomResizedCrop`` to the image's own size).
    """
    if not isinstance(results.get('img'), np.ndarray) or not isinstance(
        results.get(key), np.ndarray
    ):
        return None
    now = _img_geometry(results)
    mark = results.get(ALIGNED_FIELD, {}).get(key)
    other = tuple(results[key].shape[:2])
    if other != now['shape']:
        ori = results.get('ori_shape')
        as_loaded = (
            ori is not None and tuple(ori[:2]) == now['shape'] and not now['flip'] and mark is None
        )
        if not as_loaded:
            return (
                f"'img' is {now['shape'][0]}x{now['shape'][1]} but '{key}' is "
                f'{other[0]}x{other[1]}: a crop or resize changed img only'
            )
    if mark is not None and mark != now:
        return (
            f"'img' changed after KeyAlignedGeometry aligned '{key}' (then {mark}, now {now}): a "
            'geometric transform outside KeyAlignedGeometry ran on img only'
        )
    if mark is None and now['flip']:
        return (
            f"'img' was flipped ({now['flip_direction']}, recorded by RandomFlip) but '{key}' was "
            'not'
        )
    return None


@TRANSFORMS.register_module()
class KeyAlignedGeometry(BaseTransform):
    """Apply ``transforms`` to ``img`` and, with the same drawn parameters, to each of ``keys``.

    mmcv's and mmpretrain's geometric transforms (``RandomResizedCrop``,
    ``RandomFlip``, ``RandomCrop``, ``Resize``, ...) change ``results['img']``
    only. A second modality stored with the sample, e.g. a depth map that a
    cross-modal teacher sees through ``TeacherView(in_key='depth')``, would
    keep its full, unflipped frame while the student sees a flipped crop, and
    CRD would pair features of different pixels. This wrapper runs
    ``transforms`` once on the sample, then once more per key on a copy of
    the sample taken before them with the key's array in ``img``, with
    numpy's, Python's and torch's global random states reset to where they
    were before the first run: the crop box, flip and scale drawn for
    ``img`` are drawn again for each key. (mmcv's ``cache_random_params``,
    which its ``TransformBroadcaster`` uses, fails on mmpretrain 1.2.0's
    ``RandomResizedCrop``, whose class lists ``rand_crop_params`` twice.)
    Each replay must record the same size, ``flip``, ``flip_direction`` and
    ``scale_factor`` as the run on ``img``, or a ``ValueError`` says so. Only
    the arrays of ``keys`` are taken from the replays; everything else
    (``img_shape``, ``flip``, ...) comes from the run on ``img``, and the
    random state afterwards is the one that run left, so later transforms
    draw what they would draw without the wrapper. The keys are recorded as
    aligned, which ``TeacherView(in_key=...)`` checks::

        dict(type='KeyAlignedGeometry', keys=['depth'], transforms=[
            dict(type='RandomResizedCrop', scale=224),
            dict(type='RandomFlip', prob=0.5, direction='horizontal')]),
        dict(type='TeacherView', in_key='depth', transforms=[...]),

    Wrap geometric transforms only: photometric ones (colour jitter,
    normalisation) would be applied to the other modality too. Each key's
    array must have the height and width of ``img`` (a crop box drawn on one
    frame is meaningless on a frame of another size); the replay uses the
    same interpolation as ``img`` (bilinear for ``RandomResizedCrop``; set
    ``interpolation='nearest'`` on the transform if the second modality must
    not be blended, e.g. label maps).

    Args:
        transforms (list[dict | callable]): the geometric transforms, built
            from mmpretrain's ``TRANSFORMS`` registry.
        keys (Sequence[str]): the other keys of the sample that get the same
            geometry as ``img``, e.g. ``['depth']``.
    """

    def __init__(self, transforms: Sequence, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            keys = [keys]
        keys = list(keys)
        if not keys or 'img' in keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(
                'KeyAlignedGeometry: keys must name the other images of the sample, e.g. '
                f"keys=['depth'] ('img' is always transformed), got {keys!r}"
            )
        if not transforms:
            raise ValueError('KeyAlignedGeometry: transforms is empty; there is nothing to align')
        self.transforms = Compose(
            [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]
        )
        self.keys = keys

    def transform(self, results: dict) -> dict:
        for key in self.keys:
            if not isinstance(results.get(key), np.ndarray):
                raise KeyError(
                    f"KeyAlignedGeometry: the sample has no array '{key}' to align with 'img' "
                    f'(keys: {sorted(results)}); load it before this transform or fix keys'
                )
            reason = geometry_mismatch(results, key)
            if reason is None and results[key].shape[:2] != results['img'].shape[:2]:
                reason = (
                    f"'img' is {results['img'].shape[:2]} but '{key}' is "
                    f'{results[key].shape[:2]}; one crop box cannot be drawn for both'
                )
            if reason is not None:
                raise ValueError(
                    f"KeyAlignedGeometry: '{key}' does not show the pixels of 'img' on entry: "
                    f'{reason}. Resize or crop both together: move every geometric transform '
                    'before this one inside its transforms, and store both at one size'
                )
        before = dict(results)
        states = (np.random.get_state(), random.getstate(), torch.get_rng_state())
        results = self.transforms(results)
        if results is None:
            raise ValueError('KeyAlignedGeometry: a wrapped transform dropped the sample')
        after = (np.random.get_state(), random.getstate(), torch.get_rng_state())
        drawn = _recorded_geometry(results)
        try:
            for key in self.keys:
                np.random.set_state(states[0])
                random.setstate(states[1])
                torch.set_rng_state(states[2])
                replay = self.transforms({**before, 'img': before[key]})
                view = None if replay is None else replay.get('img')
                if not isinstance(view, np.ndarray) or _recorded_geometry(replay) != drawn:
                    raise ValueError(
                        f"KeyAlignedGeometry: replaying the transforms on '{key}' did not repeat "
                        f"what they did to 'img' ({drawn} for img, "
                        f'{None if replay is None else _recorded_geometry(replay)} for {key}): '
                        'wrap only geometric transforms whose random draws depend on the random '
                        "state and the image size alone, and give the key img's height and width"
                    )
                results[key] = view
        finally:
            np.random.set_state(after[0])
            random.setstate(after[1])
            torch.set_rng_state(after[2])
        marks = dict(results.get(ALIGNED_FIELD, {}))
        marks.update({key: _img_geometry(results) for key in self.keys})
        results[ALIGNED_FIELD] = marks
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(transforms={self.transforms.transforms}, keys={self.keys})'
        )
