# CKD (Zhu et al., 2024): CE 1.0 + CKD 10 on the logits (the authors'
# weight; no KD term). Each teacher sample must pick its own student logits
# among the batch's by cosine similarity.
_base_ = ['./_base_distill.py']

model = dict(
    distiller=dict(
        distill_losses=dict(loss_ckd=dict(type='CKDLoss', loss_weight=10.0)),
        loss_forward_mappings=dict(
            loss_ckd=dict(
                s_logits=dict(from_student=True, recorder='logits'),
                t_logits=dict(from_student=False, recorder='logits'),
            )
        ),
    )
)
