# ImageNet-1k exactly as mmpretrain trains its ResNets (RandomResizedCrop 224
# + flip; resize 256 / center crop 224 for validation; 32 images per GPU),
# read from data/imagenet in mmpretrain's layout (train/<wnid>/*.JPEG, val/
# and meta/{train,val}.txt). Only the data preprocessor gets an explicit type:
# a distiller (default_scope 'mmrazor') would otherwise not find mmpretrain's.
# `PackInputs` keeps `sample_idx`, which CRD's memory bank needs.
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs32.py']

data_preprocessor = dict(type='mmpretrain.ClsDataPreprocessor')
