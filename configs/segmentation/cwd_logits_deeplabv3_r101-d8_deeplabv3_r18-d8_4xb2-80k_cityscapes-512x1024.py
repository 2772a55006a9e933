# mmrazor's CWD recipe (logits, tau 1, weight 5, 80k iterations, 4 GPUs x 2 images) with
# DeepLabV3 in place of PSPNet: R101-d8 teacher (mmseg's released Cityscapes checkpoint, 80.20
# mIoU) -> R18-d8 student. Everything else is inherited unchanged.
_base_ = [
    'mmrazor::distill/mmseg/cwd/cwd_logits_pspnet_r101-d8_pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'  # noqa: E501
]

model = dict(
    architecture=dict(cfg_path='mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'),
    teacher=dict(cfg_path='mmseg::deeplabv3/deeplabv3_r101-d8_4xb2-80k_cityscapes-512x1024.py'),
    teacher_ckpt='https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3/deeplabv3_r101-d8_512x1024_80k_cityscapes/deeplabv3_r101-d8_512x1024_80k_cityscapes_20200606_113503-9e428899.pth',  # noqa: E501
)

# stop at the first non-finite loss, naming the iteration and the terms (docs/reliability.md)
default_hooks = dict(stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'))
custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)
