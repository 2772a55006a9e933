# CRCD on the CIFAR networks (Zhu et al., CVPR 2021): CE 1.0 + KD 0.9 (T=4)
# + the feature relation 1.0 + the gradient relation 1.0. The feature
# relation contrasts anchor-relative relations of the 128-d embeddings
# (CRDConnector heads on the pooled `neck` features); the gradient relation
# (the complementary element) does the same with the gradients of the task
# loss w.r.t. those features, embedded by heads inside the loss, which needs
# the teacher classifier's weight (`fc_weight`). K = 500 negatives from other
# classes, T = 0.05. Each relation has its own memory banks in
# CRDMemoryBankHook. As in the authors' CIFAR runs (250 epochs), every
# distillation loss is switched off for the last 10 epochs (StopDistillHook:
# the student is fine-tuned on CE alone at the final learning rate).
# Configs using this base set, for student and teacher, `backbone`,
# `head.in_channels`, the connectors' `dim_in` and the gradient relation's
# `student_channels`/`teacher_channels` (the same widths) and `teacher_ckpt`.
_base_ = ['./cifar_distill.py', '../distillers/crcd.py']

model = dict(distiller=_base_.crcd_distiller)

custom_hooks = [
    dict(type='CRDMemoryBankHook'),
    # the last 10 epochs of ../schedules/cifar100_crcd_250e.py
    dict(type='StopDistillHook', stop_epoch=240),
]
# with the losses switched off, the embedding heads get no gradient: DDP
# must not wait for them
find_unused_parameters = True
