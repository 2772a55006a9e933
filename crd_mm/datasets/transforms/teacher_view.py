"""A second view of each sample, built by its own pipeline branch, for a cross-modal teacher."""

from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform, Compose
from mmpretrain.datasets.transforms import PackInputs
from mmpretrain.registry import TRANSFORMS

from .key_aligned_geometry import geometry_mismatch


@TRANSFORMS.register_module()
class TeacherView(BaseTransform):
    """Build the teacher's input from the same sample through its own transforms.

    Cross-modal distillation (CRD, Tian et al. 2020) shows the teacher one
    view of a sample and the student another: the L channel of a CIE Lab
    image and its ab channels, a full- and a low-resolution image, or an RGB
    image and a depth map stored with it. This transform copies the sample,
    puts ``results[in_key]`` into the copy's ``img``, runs ``transforms`` on
    the copy only and stores the resulting image, as a (C, H, W) tensor like
    ``PackInputs`` makes, in ``results[out_key]``; the sample itself (the
    student's view) is left as it was. Add ``out_key`` to ``PackInputs``'
    ``algorithm_keys`` so it travels in each data sample, where
    ``CrossModalDistill`` reads it::

        train_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=224),   # shared: both views show this crop
            dict(type='TeacherView', transforms=[        # the teacher: L of Lab
                dict(type='ConvertColor', conversion='BGR2Lab'),
                dict(type='SelectChannels', channels=[0])]),
            dict(type='ConvertColor', conversion='BGR2Lab'),   # the student: ab
            dict(type='SelectChannels', channels=[1, 2]),
            dict(type='PackInputs', algorithm_keys=['teacher_inputs']),
        ]

    Transforms placed before this one are shared by both views; random ones
    inside ``transforms`` are drawn independently of the student's. With
    another ``in_key`` (a depth map, ...), the shared geometric transforms
    must reach that key too: mmcv's and mmpretrain's touch ``img`` only, so
    wrap them in ``KeyAlignedGeometry(keys=[in_key], transforms=[...])``.
    Otherwise this transform raises a ``ValueError`` naming ``in_key`` where
    the pipeline shows it: ``img`` and ``in_key`` of different sizes after a
    crop or resize, mmcv's ``flip=True`` without the key flipped along, or a
    geometric change of ``img`` after the key was aligned (see
    ``geometry_mismatch``).

    Args:
        transforms (list[dict | callable]): the teacher's branch, run on a
            copy of the sample. May be empty (the teacher sees the sample as
            it is at this point of the pipeline).
        in_key (str): the key holding the image the branch starts from, e.g.
            a depth map stored with the sample. Defaults to 'img'.
        out_key (str): the key the teacher's view is written to. Defaults to
            'teacher_inputs'.
    """

    def __init__(
        self, transforms: Sequence = (), in_key: str = 'img', out_key: str = 'teacher_inputs'
    ) -> None:
        self.branch = Compose(
            [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms]
        )
        self.in_key = in_key
        self.out_key = out_key

    def transform(self, results: dict) -> dict:
        if self.in_key not in results:
            raise KeyError(
                f"TeacherView: the sample has no '{self.in_key}' to build the teacher's "
                f'view from (keys: {sorted(results)}); set in_key to one of them'
            )
        if self.in_key != 'img':
            reason = geometry_mismatch(results, self.in_key)
            if reason is not None:
                raise ValueError(
                    f"TeacherView(in_key='{self.in_key}'): the teacher's view would not show the "
                    f"student's pixels: {reason}. mmcv's and mmpretrain's crops, flips and resizes "
                    f"change 'img' only; put the geometric transforms before TeacherView inside "
                    f"dict(type='KeyAlignedGeometry', keys=['{self.in_key}'], transforms=[...])"
                )
        branch = dict(results)
        branch['img'] = (
            np.copy(results[self.in_key])
            if isinstance(results[self.in_key], np.ndarray)
            else results[self.in_key]
        )
        branch = self.branch(branch)
        if branch is None:
            raise ValueError(
                "TeacherView: a transform of the teacher's branch dropped the sample "
                '(returned None); the teacher needs a view of every sample'
            )
        view = branch['img']
        if isinstance(view, (list, tuple)):
            raise ValueError(
                f"TeacherView: the teacher's branch made {len(view)} images of one sample, but "
                'the teacher needs exactly one view per sample, as the student gets one: its batch '
                f"would be {len(view)}x the student's. Remove the multi-view transform from the "
                'branch.'
            )
        view = PackInputs.format_input(view)
        if view.ndim != 3:
            raise ValueError(
                f"TeacherView: the teacher's view must be one (C, H, W) image, got shape "
                f"{tuple(view.shape)} from '{self.in_key}'; one sample must give exactly one view"
            )
        results[self.out_key] = view
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(transforms={self.branch.transforms}, '
            f"in_key='{self.in_key}', out_key='{self.out_key}')"
        )
