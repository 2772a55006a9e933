"""Colour-space conversion of ``img`` with OpenCV, e.g. to CIE Lab for colour-channel transfer."""

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ConvertColor(BaseTransform):
    """Convert ``results['img']`` with ``cv2.cvtColor(img, cv2.COLOR_<conversion>)``.

    Images loaded by ``LoadImageFromFile`` are BGR, so CIE Lab is
    ``conversion='BGR2Lab'``. For uint8 images OpenCV stores Lab as
    L * 255 / 100 and a + 128, b + 128 (all in 0..255); float32 images in
    0..1 give L in 0..100 and a, b in about -127..127. A grey-scale (H, W)
    image is accepted by conversions from GRAY only.

    Args:
        conversion (str): an OpenCV conversion code without its ``COLOR_``
            prefix, e.g. 'BGR2Lab', 'BGR2YCrCb', 'BGR2HSV', 'BGR2GRAY'.
    """

    def __init__(self, conversion: str) -> None:
        code = getattr(cv2, f'COLOR_{conversion}', None)
        if code is None:
            raise ValueError(
                f"ConvertColor: OpenCV has no conversion 'COLOR_{conversion}'; use a "
                "cv2.COLOR_* name without the prefix, e.g. 'BGR2Lab' or 'BGR2YCrCb'"
            )
        self.conversion = conversion
        self.code = code

    def transform(self, results: dict) -> dict:
        img = cv2.cvtColor(results['img'], self.code)
        results['img'] = np.ascontiguousarray(img)
        results['img_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(conversion='{self.conversion}')"
