"""CIRKD's pixel-to-memory and region-to-memory relational distillation (Yang et al., CVPR 2022)."""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmrazor.registry import MODELS
from torch import nn

from ...memory import MemoryBankClient
from ...memory.pixel_queue import IGNORE_INDEX, check_class_labels
from .pixel_crd_loss import dense_labels, feature_map

ENQUEUE_MODES = ('before', 'after')


def relation_kd(
    s_anchor: torch.Tensor,
    t_anchor: torch.Tensor,
    entries: torch.Tensor,
    contrast_temperature: float,
    kd_temperature: float,
) -> torch.Tensor:
    """KL(teacher || student) of the anchors' similarity distributions over memory entries.

    Scores are anchor . entry / ``contrast_temperature``; both are softened by
    ``kd_temperature``; the KL is summed and divided by the number of anchors
    ('batchmean'), times kd_temperature^2. Teacher scores carry no gradient.
    """
    entries = entries.to(s_anchor.dtype)
    s_logits = s_anchor @ entries.t() / contrast_temperature
    t_logits = (t_anchor @ entries.t() / contrast_temperature).detach()
    log_p_s = F.log_softmax(s_logits / kd_temperature, dim=1)
    p_t = F.softmax(t_logits / kd_temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction='batchmean') * kd_temperature**2


@MODELS.register_module()
class CIRKDLoss(nn.Module, MemoryBankClient):
    """CIRKD's memory-based relational distillation, as the authors' StudentSegContrast.

    The student map goes through a projection head (1x1 conv student -> teacher
    channels, norm, ReLU, 1x1 conv) and both maps are L2-normalised per pixel.
    Every pixel whose label (the ground-truth map resized with nearest
    interpolation) is not ``ignore_index`` is an anchor. Per call, one random
    permutation of the pixel queue's slots gives ``pixel_contrast_size`` slots,
    taken from every class (C x pixel_contrast_size teacher pixel entries), and
    likewise for the region queue; each anchor's similarities to those entries
    (/ ``contrast_temperature``) are distilled from teacher to student with a
    KL divergence at ``kd_temperature``. Returns ``pixel_weight`` x pixel term
    + ``region_weight`` x region term. The queues live in a
    :class:`~crd_mm.memory.CIRKDMemory` owned by ``CRDMemoryBankHook``.

    The authors' behaviour is the default. Options that differ from it:
    ``enqueue='after'`` enqueues the batch after the loss (through the hook,
    with the other memories), so the current batch is not in its own memory;
    ``student_channels=None`` drops the projection head, for student maps that a
    connector already projected to the teacher's width.

    Args:
        num_classes (int): C.
        teacher_channels (int): D, the teacher map's channel count.
        student_channels (int, optional): the student map's channel count, for the
            projection head; None: no head. Defaults to None.
        pixel_memory_size (int): pixel entries per class (CIRKD: 20000). Defaults to 20000.
        region_memory_size (int): region entries per class (CIRKD: 2000). Defaults to 2000.
        pixel_contrast_size (int, optional): sampled pixel slots per class; None:
            CIRKD's 4096 // C + 1. Defaults to None.
        region_contrast_size (int, optional): sampled region slots per class; None:
            CIRKD's 1024 // C + 1. Defaults to None.
        contrast_temperature (float): CIRKD's 0.1. Defaults to 0.1.
        kd_temperature (float): CIRKD's 1.0. Defaults to 1.0.
        pixel_weight (float): CIRKD's lambda of the pixel term, 0.1. Defaults to 0.1.
        region_weight (float): CIRKD's lambda of the region term, 0.1. Defaults to 0.1.
        pixel_update_freq (int): pixels enqueued per class and image (CIRKD: 16).
            Defaults to 16.
        enqueue (str): 'before' (CIRKD: the batch enters the memory before the
            loss reads it) or 'after'. Defaults to 'before'.
        ignore_index (int): label of unlabelled pixels. Defaults to 255.
        norm_cfg (dict): the head's normalisation (CIRKD: SyncBN; use
            dict(type='SyncBN') in distributed recipes). Defaults to dict(type='BN').
    """

    def __init__(
        self,
        num_classes: int,
        teacher_channels: int,
        student_channels: Optional[int] = None,
        pixel_memory_size: int = 20000,
        region_memory_size: int = 2000,
        pixel_contrast_size: Optional[int] = None,
        region_contrast_size: Optional[int] = None,
        contrast_temperature: float = 0.1,
        kd_temperature: float = 1.0,
        pixel_weight: float = 0.1,
        region_weight: float = 0.1,
        pixel_update_freq: int = 16,
        enqueue: str = 'before',
        ignore_index: int = IGNORE_INDEX,
        norm_cfg: Optional[dict] = None,
    ):
        super().__init__()
        if enqueue not in ENQUEUE_MODES:
            raise ValueError(f'enqueue must be one of {ENQUEUE_MODES}, got {enqueue!r}')
        if contrast_temperature <= 0 or kd_temperature <= 0:
            raise ValueError('CIRKDLoss needs contrast_temperature > 0 and kd_temperature > 0')
        self.num_classes = num_classes
        self.teacher_channels = teacher_channels
        self.pixel_memory_size = pixel_memory_size
        self.region_memory_size = region_memory_size
        self.pixel_contrast_size = (
            4096 // num_classes + 1 if pixel_contrast_size is None else pixel_contrast_size
        )
        self.region_contrast_size = (
            1024 // num_classes + 1 if region_contrast_size is None else region_contrast_size
        )
        if self.pixel_contrast_size > pixel_memory_size or (
            self.region_contrast_size > region_memory_size
        ):
            raise ValueError(
                f'pixel_contrast_size ({self.pixel_contrast_size}) and region_contrast_size '
                f'({self.region_contrast_size}) cannot exceed pixel_memory_size '
                f'({pixel_memory_size}) and region_memory_size ({region_memory_size})'
            )
        self.contrast_temperature = contrast_temperature
        self.kd_temperature = kd_temperature
        self.pixel_weight = pixel_weight
        self.region_weight = region_weight
        self.pixel_update_freq = pixel_update_freq
        self.enqueue = enqueue
        self.ignore_index = ignore_index
        self.project_head = None
        if student_channels is not None:
            norm = build_norm_layer(norm_cfg or dict(type='BN'), teacher_channels)[1]
            self.project_head = nn.Sequential(
                nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
                norm,
                nn.ReLU(inplace=True),
                nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
            )

    def bank_requirements(self) -> dict:
        return dict(
            memory='CIRKDMemory',
            needs_labels=False,
            num_classes=self.num_classes,
            pixel_memory_size=self.pixel_memory_size,
            region_memory_size=self.region_memory_size,
            feat_dim=self.teacher_channels,
            pixel_update_freq=self.pixel_update_freq,
        )

    def embed(self, s_feats, t_feats, data_samples: Sequence) -> Tuple[torch.Tensor, ...]:
        """(student unit map, teacher unit map, labels at the map's size) after the checks."""
        s_feats, t_feats = feature_map(s_feats), feature_map(t_feats)
        if self.project_head is not None:
            s_feats = self.project_head(s_feats)
        if s_feats.dim() != 4 or s_feats.shape != t_feats.shape:
            raise ValueError(
                f'CIRKDLoss needs student and teacher maps of one shape (B, '
                f'{self.teacher_channels}, H, W) after the projection head, got '
                f'{tuple(s_feats.shape)} and {tuple(t_feats.shape)}: set student_channels and '
                "teacher_channels to the recorded layers' channel counts and record layers of "
                'the same stride'
            )
        labels = dense_labels(data_samples, s_feats.shape[-2:], s_feats.device)
        check_class_labels(labels, self.num_classes, self.ignore_index, 'CIRKDLoss')
        return F.normalize(s_feats, dim=1), F.normalize(t_feats, dim=1), labels

    def forward(self, s_feats, t_feats, data_samples: Sequence) -> torch.Tensor:
        memory = self.require_memory_bank()
        s_map, t_map, labels = self.embed(s_feats, t_feats, data_samples)
        memory.stage(t_map, labels, self.ignore_index)
        if self.enqueue == 'before':  # the authors': every rank's batch enters before the loss
            memory.apply_staged()
        pixel_slots = memory.sample_slots(self.pixel_contrast_size, 'pixel')
        region_slots = memory.sample_slots(self.region_contrast_size, 'region')
        return self.memory_loss(s_map, t_map, labels, pixel_slots, region_slots)

    def memory_loss(
        self,
        s_map: torch.Tensor,
        t_map: torch.Tensor,
        labels: torch.Tensor,
        pixel_slots: torch.Tensor,
        region_slots: torch.Tensor,
    ) -> torch.Tensor:
        """The weighted loss of unit maps against given memory slots (no sampling, no update)."""
        memory = self.require_memory_bank()
        dim = s_map.shape[1]
        keep = labels.flatten() != self.ignore_index
        s_anchor = s_map.permute(0, 2, 3, 1).reshape(-1, dim)[keep]
        t_anchor = t_map.permute(0, 2, 3, 1).reshape(-1, dim)[keep]
        if not keep.any():  # a zero that keeps the student's graph (no anchor pixel)
            return 0.0 * s_map.sum()
        args = (self.contrast_temperature, self.kd_temperature)
        with torch.autocast(device_type=s_map.device.type, enabled=False):
            dtype = torch.float64 if s_anchor.dtype == torch.float64 else torch.float32
            s_anchor, t_anchor = s_anchor.to(dtype), t_anchor.to(dtype)
            pixel = relation_kd(s_anchor, t_anchor, memory.entries('pixel', pixel_slots), *args)
            region = relation_kd(s_anchor, t_anchor, memory.entries('region', region_slots), *args)
        return self.pixel_weight * pixel + self.region_weight * region
