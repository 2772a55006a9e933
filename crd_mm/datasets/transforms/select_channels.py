"""Keep a subset of the image's channels, e.g. L or ab of a Lab image."""

from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class SelectChannels(BaseTransform):
    """Keep the channels ``channels`` of ``results['img']`` (H, W, C), in that order.

    The result keeps its channel axis even for one channel, (H, W, 1), so the
    network's first convolution sees ``len(channels)`` input channels.

    Args:
        channels (Sequence[int]): channel indices, e.g. [0] for L and [1, 2]
            for ab after ``ConvertColor(conversion='BGR2Lab')``.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        if len(channels) == 0 or any(int(c) != c or c < 0 for c in channels):
            raise ValueError(
                f'SelectChannels: channels must be non-negative integers, got {channels!r}'
            )
        self.channels = [int(c) for c in channels]

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        if max(self.channels) >= img.shape[2]:
            raise ValueError(
                f'SelectChannels: channels {self.channels} asked of an image with '
                f'{img.shape[2]} channels'
            )
        results['img'] = np.ascontiguousarray(img[..., self.channels])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(channels={self.channels})'
