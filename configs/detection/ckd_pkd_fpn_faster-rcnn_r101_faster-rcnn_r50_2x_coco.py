# CKD added to mmrazor's PKD Faster R-CNN config: ResNet-101 teacher -> ResNet-50 student on
# COCO (data/coco). Everything of the base stays (PKD on the FPN, the teacher's released
# checkpoint, the 2x schedule); this file adds CKD on the RoI-head classification logits
# (81-way) of the proposals the student sampled, classified by both networks (the CKD paper's
# detection setting, weight 0.1).
_base_ = ['mmrazor::distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py']

custom_imports = dict(imports=['crd_mm'], allow_failed_imports=False)

model = dict(
    # FpnTeacherDistill + the teacher's RoI box head run on the student's sampled RoIs,
    # which it reads from the student recorder named by `rois_recorder`.
    type='FpnRoITeacherDistill',
    rois_recorder='rois',
    distiller=dict(
        student_recorders=dict(
            rois=dict(type='ModuleInputs', source='roi_head.bbox_roi_extractor'),
            cls_score=dict(type='ModuleOutputs', source='roi_head.bbox_head.fc_cls'),
        ),
        teacher_recorders=dict(
            cls_score=dict(type='ModuleOutputs', source='roi_head.bbox_head.fc_cls')
        ),
        distill_losses=dict(loss_ckd=dict(type='CKDLoss', loss_weight=0.1, temperature=1.0)),
        loss_forward_mappings=dict(
            loss_ckd=dict(
                s_logits=dict(from_student=True, recorder='cls_score'),
                t_logits=dict(from_student=False, recorder='cls_score'),
            )
        ),
    ),
)

# a NaN/inf loss stops the run at that iteration, naming the terms (added to
# the base's default_hooks, as in every crd_mm recipe)
default_hooks = dict(stop_on_non_finite_loss=dict(type='StopOnNonFiniteLossHook'))
