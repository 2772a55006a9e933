# CWD + PixelCRD on Cityscapes: DeepLabV3 R101-d8 -> R18-d8. The CWD recipe
# (cwd_logits_deeplabv3_r101-d8_deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py) is kept whole
# (logits CWD, the teacher's released checkpoint, the 80k schedule); PixelCRD is added on the
# features before the classifier (configs/_base_/segmentation/dense_contrast_cityscapes.py).
_base_ = [
    './cwd_logits_deeplabv3_r101-d8_deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py',  # noqa: E501
    '../_base_/segmentation/dense_contrast_cityscapes.py',
]

model = dict(distiller=_base_.pixel_crd_distiller)

# owns the PixelQueue (updated from every GPU's pixels, checkpointed and resumed)
custom_hooks = [dict(type='CRDMemoryBankHook')]

# stop at the first non-finite loss, naming the iteration and the terms (docs/reliability.md)
default_hooks = dict(stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'))
