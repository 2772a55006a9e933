# What every CRCD recipe of configs/crcd/cifar100/ shares: the method
# (../models/cifar_crcd_distill.py), the CRD paper's CIFAR-100 data, the
# schedule (../schedules/cifar100_crcd_250e.py) and the network table
# (../models/cifar_networks.py). A recipe adds only its pair: the two
# networks, the widths its method needs and `teacher_ckpt`, the last
# checkpoint of the teacher's config in configs/cifar100_teachers/ in
# tools/train.py's default work_dir (work_dirs/<teacher>_cifar100/epoch_240.pth,
# relative to the repository root).
_base_ = [
    '../models/cifar_crcd_distill.py',
    '../models/cifar_networks.py',
    '../datasets/cifar100_crd.py',
    '../schedules/cifar100_crcd_250e.py',
]
