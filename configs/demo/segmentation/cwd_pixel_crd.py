# The segmentation demo: CE + CWD on the logits + PixelCRD on the features before the
# classifier (_distill.py). Train the teacher first:
#   python tools/train.py configs/demo/segmentation/teacher.py \
#       --work-dir work_dirs/demo/segmentation/teacher
#   python tools/train.py configs/demo/segmentation/cwd_pixel_crd.py \
#       --work-dir work_dirs/demo/segmentation/cwd_pixel_crd
_base_ = ['./_distill.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_cwd=_base_.cwd_loss, loss_pixel_crd=_base_.pixel_crd_loss),
        connectors=_base_.pixel_crd_connectors,
        loss_forward_mappings=dict(
            loss_cwd=_base_.cwd_mapping, loss_pixel_crd=_base_.pixel_crd_mapping
        ),
    )
)

# owns the PixelQueue: enqueues every rank's pixels after each iteration, checkpoints it
custom_hooks = [dict(type='CRDMemoryBankHook')]
