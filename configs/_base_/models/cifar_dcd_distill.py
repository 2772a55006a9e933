# DCD on the CIFAR networks (Giakoumoglou and Stathaki, 2024): CE 1.0 +
# DCD 1.0 between the pooled penultimate features (`neck` outputs) of student
# and frozen teacher, each through a trainable 128-d embedding head
# (CRDConnector: Linear + L2 normalisation). The other samples of the batch
# are the negatives, so there is no memory bank; the loss's learnable
# temperature and bias train with the student. DCD+KD configs add KD 1.0 at
# T=4. Configs using this base set, for student and teacher, `backbone`,
# `head.in_channels`, the connectors' `dim_in` (the same widths) and
# `teacher_ckpt`.
_base_ = ['./cifar_distill.py', '../distillers/dcd.py']

model = dict(distiller=_base_.dcd_distiller)
