# CKD on the CIFAR networks (Zhu et al., 2024): CE 1.0 + w * CKD between the
# logits (`head.fc` outputs) of student and frozen teacher. Each teacher
# sample must pick its own student logits among the batch's (cosine
# similarity, T = 1); there are no embedding heads, no memory bank and no
# learnable parameters. Configs using this base set, for student and teacher,
# `backbone` and `head.in_channels`, the weight w (`loss_ckd.loss_weight`:
# 10 to 100 on CIFAR-100 in the paper) and `teacher_ckpt`.
_base_ = ['./cifar_distill.py', '../distillers/ckd.py']

model = dict(distiller=_base_.ckd_distiller)
