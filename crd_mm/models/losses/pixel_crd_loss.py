"""PixelCRD: CRD's NCE objective on dense (per-pixel) embeddings, for semantic segmentation."""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmrazor.registry import MODELS
from torch import nn

from ...memory import MemoryBankClient
from ...memory.pixel_queue import IGNORE_INDEX, check_class_labels, sample_class_pixels
from .crd_loss import contrast_scores, nce_loss


def dense_labels(data_samples: Sequence, size: Tuple[int, int], device) -> torch.Tensor:
    """The batch's ground-truth maps resized to ``size`` with nearest interpolation, (B, H, W).

    Reads ``gt_sem_seg.data`` (1, H0, W0) of mmseg's ``SegDataSample``; the data
    preprocessor pads every map of a batch to one size (with the ignore label).
    """
    if not data_samples or any('gt_sem_seg' not in sample for sample in data_samples):
        raise ValueError(
            'dense contrastive losses need the ground-truth maps of the batch: map the data '
            'samples in loss_forward_mappings as data_samples=dict(from_student=True, '
            "recorder='data_samples', data_idx=1) with a ModuleInputs recorder of source='', "
            'and train on a segmentation dataset (SegDataSample.gt_sem_seg)'
        )
    maps = torch.stack(
        [
            sample.gt_sem_seg.data.reshape(sample.gt_sem_seg.data.shape[-2:])
            for sample in data_samples
        ]
    )
    maps = F.interpolate(maps[:, None].float(), size=tuple(size), mode='nearest')
    return maps[:, 0].long().to(device)


def feature_map(feature) -> torch.Tensor:
    """The last element of a recorded tuple/list, else the tensor itself."""
    return feature[-1] if isinstance(feature, (tuple, list)) else feature


@MODELS.register_module()
class PixelCRDLoss(nn.Module, MemoryBankClient):
    """CRD on pixels: a student pixel's positive is the teacher embedding of the same pixel.

    Per image, up to ``pixels_per_class`` random pixels of every class present
    (the ignore label skipped; labels are the ground-truth map resized to the
    feature map with nearest interpolation) are anchors. A student anchor is
    scored against its teacher pixel (positive) and the queued teacher pixel
    embeddings of the other classes (negatives); a teacher anchor likewise
    against student entries. The two NCE losses (CRD's Eq. 18 with a uniform
    noise distribution over the queue) are summed and multiplied by
    ``loss_weight``. The anchors are enqueued after the step by
    ``CRDMemoryBankHook`` (:class:`~crd_mm.memory.PixelQueue`, gathered from
    all ranks), so a batch is never its own negative.

    Inputs are unit embedding maps of the same shape (B, D, H, W), e.g. from two
    ``PixelEmbedConnector`` heads, and the data samples.

    Args:
        num_classes (int): classes of the dataset (the queue's C).
        loss_weight (float): multiplies the loss. Defaults to 1.0.
        temperature (float): T of the scores. Defaults to 0.07.
        feat_dim (int): the embedding width D. Defaults to 128.
        pixels_per_class (int): anchors per class and image. Defaults to 16.
        queue_size (int): queued pixels per class. Defaults to 512.
        ignore_index (int): label of unlabelled pixels. Defaults to 255.
        eps (float): numerical guard of the NCE terms. Defaults to 1e-7.
    """

    def __init__(
        self,
        num_classes: int,
        loss_weight: float = 1.0,
        temperature: float = 0.07,
        feat_dim: int = 128,
        pixels_per_class: int = 16,
        queue_size: int = 512,
        ignore_index: int = IGNORE_INDEX,
        eps: float = 1e-7,
    ):
        super().__init__()
        if num_classes < 2 or temperature <= 0 or pixels_per_class < 1 or queue_size < 1:
            raise ValueError(
                'PixelCRDLoss needs num_classes >= 2, temperature > 0, pixels_per_class >= 1 and '
                f'queue_size >= 1; got {num_classes}, {temperature}, {pixels_per_class}, '
                f'{queue_size}'
            )
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.temperature = temperature
        self.feat_dim = feat_dim
        self.pixels_per_class = pixels_per_class
        self.queue_size = queue_size
        self.ignore_index = ignore_index
        self.eps = eps

    def bank_requirements(self) -> dict:
        return dict(
            memory='PixelQueue',
            needs_labels=False,
            num_classes=self.num_classes,
            queue_size=self.queue_size,
            feat_dim=self.feat_dim,
        )

    def anchors(self, s_feats: torch.Tensor, t_feats: torch.Tensor, data_samples: Sequence):
        """(classes (A,), student rows (A, D), teacher rows (A, D)) of the sampled pixels."""
        s_feats, t_feats = feature_map(s_feats), feature_map(t_feats)
        if (
            s_feats.dim() != 4
            or s_feats.shape != t_feats.shape
            or s_feats.shape[1] != self.feat_dim
        ):
            raise ValueError(
                f'PixelCRDLoss(feat_dim={self.feat_dim}) needs student and teacher embedding maps '
                f'of one shape (B, {self.feat_dim}, H, W), got {tuple(s_feats.shape)} and '
                f'{tuple(t_feats.shape)}: embed both with PixelEmbedConnector(dim_out=feat_dim) '
                'and record layers of the same stride'
            )
        batch, dim, height, width = s_feats.shape
        labels = dense_labels(data_samples, (height, width), s_feats.device)
        check_class_labels(labels, self.num_classes, self.ignore_index, 'PixelCRDLoss')
        memory = self.require_memory_bank()
        groups = sample_class_pixels(
            labels, self.pixels_per_class, memory.generator, self.ignore_index
        )
        if not groups:
            return None
        index = torch.cat([image * height * width + pixels for image, _, pixels in groups])
        classes = torch.cat(
            [torch.full((pixels.numel(),), cls, dtype=torch.long) for _, cls, pixels in groups]
        ).to(s_feats.device)
        rows_s = s_feats.permute(0, 2, 3, 1).reshape(-1, dim)[index]
        rows_t = t_feats.permute(0, 2, 3, 1).reshape(-1, dim)[index]
        return classes, rows_s, rows_t

    def forward(self, s_feats, t_feats, data_samples: Sequence) -> torch.Tensor:
        memory = self.require_memory_bank()
        sampled = self.anchors(s_feats, t_feats, data_samples)
        if sampled is None:  # only ignored pixels: a zero that keeps both graphs
            return 0.0 * (feature_map(s_feats).sum() + feature_map(t_feats).sum())
        classes, rows_s, rows_t = sampled
        loss = self.anchor_loss(classes, rows_s, rows_t)
        memory.stage(classes, rows_s, rows_t)
        return loss

    def anchor_loss(
        self, classes: torch.Tensor, rows_s: torch.Tensor, rows_t: torch.Tensor
    ) -> torch.Tensor:
        """The weighted loss of given anchors against the current queue (no sampling, no update)."""
        memory = self.require_memory_bank()
        contrast = memory.contrast(classes, rows_s, rows_t)
        with torch.autocast(device_type=rows_s.device.type, enabled=False):
            scores_s = contrast_scores(
                rows_s, contrast.teacher, contrast.positive, contrast.negative, self.temperature
            )
            scores_t = contrast_scores(
                rows_t, contrast.student, contrast.positive, contrast.negative, self.temperature
            )
            log_z_s, log_z_t = memory.log_normalizers(scores_s, scores_t, contrast.valid)
            loss = nce_loss(
                scores_s - log_z_s, contrast.noise_size, self.eps, contrast.valid
            ) + nce_loss(scores_t - log_z_t, contrast.noise_size, self.eps, contrast.valid)
        return self.loss_weight * loss
