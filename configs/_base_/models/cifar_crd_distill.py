# CRD on the CIFAR networks (Tian et al., ICLR 2020): CE 1.0 on the student
# plus CRD 0.8 between the pooled penultimate features (`neck` outputs) of
# the student and the frozen teacher, through one trainable 128-d embedding
# head per network. Student and teacher are `cifar_classifier.py` models;
# configs using this base set, for both, `backbone` and `head.in_channels`,
# the connectors' `dim_in` (the same feature widths) and `teacher_ckpt`.
# The memory banks live in `CRDMemoryBankHook`.
_base_ = ['./cifar_distill.py', '../distillers/crd.py']

model = dict(distiller=_base_.crd_distiller)
