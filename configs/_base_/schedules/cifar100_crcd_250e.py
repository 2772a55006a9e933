# CRCD's CIFAR-100 schedule: the CRD paper's (SGD 0.05, momentum 0.9, wd 5e-4,
# batch 64, lr x0.1 at epochs 150, 180, 210) run for 250 epochs, as in the
# authors' runs: distillation stops after epoch 240 (StopDistillHook in
# ../models/cifar_crcd_distill.py) and the student trains 10 more epochs on
# CE alone at the final learning rate.
_base_ = ['./cifar100_crd_240e.py']

train_cfg = dict(max_epochs=250)
