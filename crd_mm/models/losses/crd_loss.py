"""CRD: Contrastive Representation Distillation (Tian, Krishnan, Isola; ICLR 2020)."""

import logging
import math
import numbers
from typing import Optional, Sequence, Tuple

import mmrazor.models  # noqa: F401  (register mmrazor's CRDLoss first, so that ours replaces it)
import torch
from mmengine.logging import print_log
from mmrazor.registry import MODELS
from torch import nn

from ...memory import MemoryBankClient
from ...memory.anchor_scores import (
    EMBEDDING_BAG_SUM,
    GATHERED_DOTS,
    SAMPLE_CHUNK_BYTES,
    AnchorContrast,
)
from ...memory.bank import NEGATIVE_SAMPLING_MODES, POSITIVE_MODES, Contrast
from ..mmrazor_names import CRD_LOSS_RENAMED, check_mmrazor_arguments


def dataset_indices(data_samples: Sequence, device) -> torch.Tensor:
    """The dataset index (``sample_idx``) of every data sample, as a long tensor."""
    if not data_samples:
        raise ValueError(
            'CRD needs the data samples of the batch; map them in loss_forward_mappings '
            "as data_samples=dict(from_student=True, recorder='data_samples', data_idx=1)"
        )
    values = []
    for sample in data_samples:
        if 'sample_idx' not in sample:
            raise KeyError(
                "data samples carry no 'sample_idx': keep it in the packing transform's meta_keys "
                "(mmpretrain's PackInputs has it by default; for mmdet add "
                "meta_keys=(..., 'sample_idx') to PackDetInputs)"
            )
        values.append(sample.sample_idx)
    if all(isinstance(value, numbers.Integral) for value in values):
        # mmengine's datasets set Python ints: one tensor for the batch, no operator per sample
        return torch.tensor(values, dtype=torch.long, device=device)
    values = [torch.as_tensor(value).reshape(()) for value in values]
    return torch.stack(values).to(device=device, dtype=torch.long)


MEMORY_KINDS = ('bank', 'queue')
# A queue fed by the paper's heads (Linear + L2) collapses (docs/memory.md); said before training.
QUEUE_HEADS_WARNING = (
    "{loss} (CRDLoss, memory='queue') gets its embeddings from {heads} without batch_norm=True. "
    "With the paper's heads (Linear + L2) a queue's negatives are the current embeddings within "
    'queue_size / batch steps, and the NCE objective drives both heads to emit one vector '
    '(every score T log(Z / K), the CRD term flat): on real photos the student then trains '
    'below the student alone (docs/memory.md). Set batch_norm=True on those CRDConnectors, or '
    "use memory='bank' (CRDMemoryBankHook(shard_banks=True) for datasets too large for it)."
)
DEFAULT_NUM_NEGATIVES = 16384

# Score all N bank rows instead of gathering B (K + 1) rows when N * ratio <= (K + 1) * D:
# a matrix-product element costs far less than a gathered one (CIFAR: 4.7x faster).
DENSE_SCORING_RATIO = 8


def sample_labels(data_samples: Sequence) -> Optional[torch.Tensor]:
    """Each data sample's single class label, or None when the samples carry none."""
    labels = [sample.gt_label for sample in data_samples if 'gt_label' in sample]
    # torch.as_tensor would be an operator (a no-op) per sample for the usual tensor labels
    labels = [x if isinstance(x, torch.Tensor) else torch.as_tensor(x) for x in labels]
    if len(labels) != len(data_samples) or any(label.numel() != 1 for label in labels):
        return None
    # mmpretrain's (1,) labels are concatenated as they are: no operator per sample
    return torch.cat([label if label.dim() == 1 else label.reshape(1) for label in labels]).long()


def check_bank_loss_settings(
    name: str, negative_sampling: str, num_negatives: int, temperature: float, momentum: float
):
    """Refuse settings no bank-based loss (CRD, CRCD) can run with."""
    if negative_sampling not in NEGATIVE_SAMPLING_MODES:
        raise ValueError(
            f'negative_sampling must be one of {NEGATIVE_SAMPLING_MODES}, got {negative_sampling!r}'
        )
    if num_negatives < 1 or temperature <= 0 or not 0 <= momentum < 1:
        raise ValueError(f'{name} needs num_negatives >= 1, temperature > 0 and 0 <= momentum < 1')


def checked_batch(
    name: str,
    bank,
    data_samples: Sequence,
    s_embeds: torch.Tensor,
    t_embeds: torch.Tensor,
    feat_dim: int,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The batch's dataset indices and classes, after every check due before the bank is read.

    Embedding shapes, indices inside the bank and the data samples' labels:
    the classes are the memory's ``anchor_labels`` (the training set's, checked
    against the data samples' where they carry labels; a queue's are the data
    samples' own), None where the memory samples no class.
    """
    idx = dataset_indices(data_samples, bank.device)
    expected = (idx.numel(), feat_dim)
    if tuple(s_embeds.shape) != expected or tuple(t_embeds.shape) != expected:
        raise ValueError(
            f'{name} expects student and teacher embeddings of shape {expected} '
            f'(batch, feat_dim), got {tuple(s_embeds.shape)} and {tuple(t_embeds.shape)}; '
            "set feat_dim to the connectors' dim_out"
        )
    bank.check_indices(idx)
    return idx, bank.anchor_labels(idx, sample_labels(data_samples))


def checked_batch_indices(
    name: str,
    bank,
    data_samples: Sequence,
    s_embeds: torch.Tensor,
    t_embeds: torch.Tensor,
    feat_dim: int,
) -> torch.Tensor:
    """:func:`checked_batch`'s indices, for losses whose bank looks the classes up itself."""
    return checked_batch(name, bank, data_samples, s_embeds, t_embeds, feat_dim)[0]


def check_memory_settings(
    memory: str,
    queue_size: Optional[int],
    num_negatives: Optional[int],
    positive: str,
    share_negatives: bool,
):
    """Refuse memory options that cannot be combined.

    A queue has no per-sample draws or relaxed positives.
    """
    if memory not in MEMORY_KINDS:
        raise ValueError(f'memory must be one of {MEMORY_KINDS}, got {memory!r}')
    if memory == 'bank':
        if queue_size is not None:
            raise ValueError(
                "queue_size applies to memory='queue' only; set memory='queue' or drop queue_size"
            )
        return
    if queue_size is None or queue_size < 1:
        raise ValueError(
            "memory='queue' needs queue_size >= 1 (the number of queued negatives), "
            f'got {queue_size}'
        )
    if num_negatives is not None or share_negatives or positive != 'exact':
        raise ValueError(
            "memory='queue' uses every queued embedding as a negative of every sample and the "
            "sample's own embedding as its positive: num_negatives, share_negatives=True and "
            "positive='relax' do not apply (set queue_size instead)"
        )


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """Scores are computed in float32 at least (exp(x / 0.07) overflows half precision)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


class GatheredRowScores(torch.autograd.Function):
    """<bank[contrast[i, k]], anchor[i]> for (B, K + 1) indices, without gathering the rows.

    The number of operators (kernel launches on a GPU) per call does not depend on B. When
    the bank is stored in the compute dtype, forward is one gathered-dot kernel (the
    ``embedding_bag`` gradient kernel for ``per_sample_weights``: one dot product per index,
    each row read where it is) and backward one ``embedding_bag`` (sum_k g[i, k]
    bank[contrast[i, k]]). Memory beyond the (B, K + 1) scores: B (K + 1) bag numbers
    (8 bytes each; 33.5 MB at B=256, K=16384) in forward, as many inside ``embedding_bag``
    in backward, and O(B D); no bank row is copied, where mmrazor keeps the (B, K + 1, D)
    rows for backward (2 GB per bank at B=256, K=16384, D=128).

    A bank stored in lower precision (float16) has its rows converted before the dot
    products, so they are gathered over the K axis, ``SAMPLE_CHUNK_BYTES // (D s)`` columns
    at a time (s: bytes per computed element; 512 columns at D=128 in float32): a fixed
    number of chunks, ceil((K + 1) D s / SAMPLE_CHUNK_BYTES), whatever B. Each chunk holds
    at most B x SAMPLE_CHUNK_BYTES of converted rows plus the stored rows they came from,
    in forward and again in backward.
    """

    # converted rows per sample per chunk (64 MB at B=256), as the owners' scoring
    SAMPLE_CHUNK_BYTES = SAMPLE_CHUNK_BYTES

    @staticmethod
    def _column_chunks(contrast: torch.Tensor, bank: torch.Tensor, dtype: torch.dtype):
        """(column slice, its rows converted to ``dtype``) for a fixed number of column chunks."""
        row_bytes = bank.shape[1] * torch.empty((), dtype=dtype).element_size()
        width = max(1, GatheredRowScores.SAMPLE_CHUNK_BYTES // row_bytes)
        for start in range(0, contrast.shape[1], width):
            columns = contrast[:, start : start + width]
            rows = bank.index_select(0, columns.reshape(-1)).view(*columns.shape, -1)
            yield slice(start, start + width), rows.to(dtype)

    @staticmethod
    def forward(ctx, anchor, bank, contrast):
        ctx.save_for_backward(bank, contrast)
        if bank.dtype == anchor.dtype:
            batch, num = contrast.shape
            bags = torch.arange(batch, device=contrast.device)
            scores = GATHERED_DOTS(
                anchor,
                bank,
                contrast.reshape(-1),
                bags * num,
                bags[:, None].expand(batch, num).contiguous().view(-1),
                EMBEDDING_BAG_SUM,
            )
            return scores.view(batch, num)
        column = anchor[:, :, None]
        return torch.cat(
            [
                torch.bmm(rows, column).squeeze(2)
                for _, rows in GatheredRowScores._column_chunks(contrast, bank, anchor.dtype)
            ],
            1,
        )

    @staticmethod
    def backward(ctx, grad_scores):
        bank, contrast = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        if bank.dtype == grad_scores.dtype:
            grad_anchor = nn.functional.embedding_bag(
                contrast, bank, per_sample_weights=grad_scores.contiguous(), mode='sum'
            )
            return grad_anchor, None, None
        grad_anchor = grad_scores.new_zeros(contrast.shape[0], 1, bank.shape[1])
        for columns, rows in GatheredRowScores._column_chunks(contrast, bank, grad_scores.dtype):
            grad_anchor.baddbmm_(grad_scores[:, None, columns], rows)
        return grad_anchor.squeeze(1), None, None


def contrast_scores(
    anchor: torch.Tensor,
    bank: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """<bank row, anchor> / T for the positive (column 0) and the K negatives, (B, K + 1).

    ``negative`` is (B, K) per sample or (K,) shared by the batch; shared
    negatives need one (K, D) gather and a matrix product instead of a
    (B, K + 1, D) gather, which is what makes them cheap at ImageNet scale.
    Per-sample negatives are scored without copying the rows, in a number of kernels
    that does not depend on B (``GatheredRowScores``), or, when the bank is much smaller
    than the rows (N * 8 <= (K + 1) D, e.g. CIFAR), against all N rows at once.
    Bank rows carry no gradient; scores are computed in float32 (float64 for float64 anchors).
    """
    dtype = compute_dtype(anchor)
    anchor = anchor.to(dtype)
    if negative.dim() == 2:
        contrast = torch.cat([positive[:, None], negative], 1)
        if (
            bank.dtype == dtype
            and DENSE_SCORING_RATIO * bank.shape[0] <= contrast.shape[1] * bank.shape[1]
        ):
            # a small bank (CIFAR: N=50k vs (K + 1) D = 2.1M): one B x N matrix product
            # is far cheaper than gathering B (K + 1) rows of D (measured in docs/benchmarks.md)
            logits = (anchor @ bank.t()).gather(1, contrast)
        else:
            logits = GatheredRowScores.apply(anchor, bank, contrast)
    else:
        pos = (bank.index_select(0, positive).to(dtype) * anchor).sum(1, keepdim=True)
        logits = torch.cat([pos, anchor @ bank.index_select(0, negative).to(dtype).t()], 1)
    return logits / temperature


def nce_loss(
    log_probs: torch.Tensor, num_samples: int, eps: float, valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """CRD's NCE objective (paper Eq. 18) from log P = score - log Z, noise distribution Pn = 1/N.

    With c = K Pn + eps: log D1 = log P_0 - log(P_0 + c) and log D0 = log(K Pn) - log(P_k + c),
    so the loss -(sum log D1 + sum log D0) / B needs one exp and one log per score.
    ``valid`` (B, K + 1), column 0 True, leaves out masked negatives: sample i then
    has K_i = its number of valid negatives (a queue's class-aware masking).
    """
    batch, num = log_probs.shape
    if valid is not None:
        k = valid[:, 1:].sum(1).to(log_probs.dtype)
        k_pn = k / num_samples
        log_denominators = torch.log(log_probs.exp() + (k_pn + eps)[:, None])
        return (
            (log_denominators * valid).sum() - log_probs[:, 0].sum() - torch.xlogy(k, k_pn).sum()
        ) / batch
    k_pn = (num - 1) / num_samples
    log_denominators = torch.log(log_probs.exp() + (k_pn + eps))
    return (log_denominators.sum() - log_probs[:, 0].sum()) / batch - (num - 1) * math.log(k_pn)


@MODELS.register_module(force=True)
class CRDLoss(nn.Module, MemoryBankClient):
    """CRD loss on the embeddings of two ``CRDConnector`` heads.

    Class-aware sampling uses the training set's labels (indexed when the hook
    builds the bank); the data samples' ``gt_label``, when present, must agree.
    Teacher anchors are scored against the student bank and student anchors
    against the teacher bank; the two NCE losses are summed and multiplied by
    ``loss_weight``. The banks, normalisation constants and sampler live in a
    :class:`~crd_mm.memory.ContrastMemoryBank` owned by ``CRDMemoryBankHook``;
    this loss only reads it and stages the batch's embeddings for the hook's
    cross-rank update.

    Registered in mmrazor's ``MODELS`` registry under mmrazor's own name with
    ``force=True``: once crd_mm is imported, every config that says
    ``type='CRDLoss'`` (mmrazor's own CRD config too) builds this class, not
    mmrazor's, which ignored ``loss_weight`` and kept per-rank banks inside the
    model (mmrazor's class stays importable from ``mmrazor.models.losses``).
    mmrazor's argument names are refused with crd_mm's: ``neg_num`` ->
    ``num_negatives``, ``dim_out`` -> ``feat_dim``; ``sample_n`` is not needed
    (``CRDMemoryBankHook`` sizes the bank from the training set).

    Args:
        loss_weight (float): multiplies the loss.
        temperature (float): T of the scores.
        num_negatives (int): K negatives per sample (or per batch if shared);
            16384 when not set.
        momentum (float): bank update momentum.
        feat_dim (int): embedding width (the connectors' ``dim_out``).
        negative_sampling (str): 'class_exact' (other classes, the paper's
            CIFAR code) or 'uniform' (any other sample).
        positive (str): 'exact' (the sample itself) or 'relax' (a random
            sample of the same class).
        share_negatives (bool): one set of K negatives for the whole batch,
            drawn uniformly (needs ``negative_sampling='uniform'``); a batch
            sample's own row among them is left out of that sample's
            negatives (its NCE term counts its own K_i).
        eps (float): numerical guard of the NCE terms.
        memory (str): 'bank' (N x D banks, the paper) or 'queue': negatives
            are the ``queue_size`` most recent embeddings of all ranks
            (:class:`~crd_mm.memory.ContrastQueue`; memory independent of N;
            share_negatives and positive='relax' do not apply, and a
            num_negatives, e.g. inherited from a bank recipe, is ignored with
            a warning). A queue needs embedding heads with
            ``CRDConnector(batch_norm=True)``: with the paper's heads both
            collapse to one vector (the hook warns before training).
        queue_size (int): Q, the queue's length (``memory='queue'`` only).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        temperature: float = 0.07,
        num_negatives: Optional[int] = None,
        momentum: float = 0.5,
        feat_dim: int = 128,
        negative_sampling: str = 'class_exact',
        positive: str = 'exact',
        share_negatives: bool = False,
        eps: float = 1e-7,
        memory: str = 'bank',
        queue_size: Optional[int] = None,
        **kwargs,
    ):
        super().__init__()
        check_mmrazor_arguments(type(self), kwargs, CRD_LOSS_RENAMED)
        if memory == 'queue' and num_negatives is not None:
            # e.g. inherited from configs/_base_/distillers/crd.py: switching a bank recipe to
            # a queue takes memory='queue' and queue_size alone
            print_log(
                f"CRDLoss: num_negatives={num_negatives} does not apply to memory='queue' (every "
                'one of the queue_size queued embeddings is a negative) and is ignored',
                logger='current',
                level=logging.WARNING,
            )
            num_negatives = None
        check_memory_settings(memory, queue_size, num_negatives, positive, share_negatives)
        num_negatives = DEFAULT_NUM_NEGATIVES if num_negatives is None else num_negatives
        check_bank_loss_settings('CRDLoss', negative_sampling, num_negatives, temperature, momentum)
        if positive not in POSITIVE_MODES:
            raise ValueError(f'positive must be one of {POSITIVE_MODES}, got {positive!r}')
        if share_negatives and negative_sampling != 'uniform':
            raise ValueError(
                'share_negatives=True draws one set of negatives for the whole batch, '
                "which cannot exclude every sample's class: set negative_sampling='uniform'"
            )
        self.loss_weight = loss_weight
        self.temperature = temperature
        self.num_negatives = num_negatives
        self.momentum = momentum
        self.feat_dim = feat_dim
        self.negative_sampling = negative_sampling
        self.positive = positive
        self.share_negatives = share_negatives
        self.eps = eps
        self.memory = memory
        self.queue_size = queue_size

    def bank_requirements(self) -> dict:
        needs_labels = self.negative_sampling == 'class_exact' or self.positive == 'relax'
        return dict(
            feat_dim=self.feat_dim,
            momentum=self.momentum,
            needs_labels=needs_labels,
            memory=self.memory,
            queue_size=self.queue_size,
        )

    def check_distiller(self, distiller, loss_name: str) -> None:
        """Warn when a queue's embeddings come from heads without ``batch_norm=True``.

        Args:
            distiller: the mmrazor distiller holding this loss, its ``connectors``
                and ``loss_forward_mappings``.
            loss_name (str): this loss's name in ``distiller.distill_losses``.
        """
        if self.memory != 'queue':
            return
        mapping = getattr(distiller, 'loss_forward_mappings', {}).get(loss_name, {})
        connectors = getattr(distiller, 'connectors', {})
        plain = []
        for argument in ('s_feats', 't_feats'):
            name = mapping.get(argument, {}).get('connector')
            head = connectors[name] if name in connectors else None
            if not getattr(head, 'batch_norm', False):
                plain.append(f'connector {name!r}' if name else f'{argument} (no connector)')
        if plain:
            print_log(
                QUEUE_HEADS_WARNING.format(loss=loss_name, heads=' and '.join(plain)),
                logger='current',
                level=logging.WARNING,
            )

    def forward(
        self, s_feats: torch.Tensor, t_feats: torch.Tensor, data_samples: Sequence
    ) -> torch.Tensor:
        memory = self.require_memory_bank()
        idx, labels = checked_batch(
            type(self).__name__, memory, data_samples, s_feats, t_feats, self.feat_dim
        )
        contrast = memory.contrast(
            idx,
            s_feats,
            t_feats,
            positive=self.positive,
            num_negatives=self.num_negatives,
            negative_sampling=self.negative_sampling,
            shared=self.share_negatives,
            labels=labels,
        )
        loss = self.scored_loss(s_feats, t_feats, contrast)
        memory.stage(idx, s_feats, t_feats, labels=labels)
        return loss

    def contrast_loss(
        self,
        s_feats: torch.Tensor,
        t_feats: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
    ) -> torch.Tensor:
        """The weighted CRD loss for given bank indices (no sampling, no bank update)."""
        return self.scored_loss(
            s_feats, t_feats, self.require_memory_bank().select(positive, negative)
        )

    def scored_loss(
        self, s_feats: torch.Tensor, t_feats: torch.Tensor, contrast: Contrast
    ) -> torch.Tensor:
        """The weighted CRD loss of the rows a memory selected (student anchors vs teacher rows)."""
        memory = self.require_memory_bank()
        device_type = s_feats.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            if isinstance(contrast, AnchorContrast):  # a sharded bank's owners score the anchors
                raw_s, raw_t = contrast.scores(
                    s_feats.to(compute_dtype(s_feats)), t_feats.to(compute_dtype(t_feats))
                )
                scores_s, scores_t = raw_s / self.temperature, raw_t / self.temperature
            else:
                scores_s = contrast_scores(
                    s_feats,
                    contrast.teacher,
                    contrast.positive,
                    contrast.negative,
                    self.temperature,
                )
                scores_t = contrast_scores(
                    t_feats,
                    contrast.student,
                    contrast.positive,
                    contrast.negative,
                    self.temperature,
                )
            log_z_s, log_z_t = memory.log_normalizers(scores_s, scores_t, contrast.valid)
            loss = nce_loss(
                scores_s - log_z_s, contrast.noise_size, self.eps, contrast.valid
            ) + nce_loss(scores_t - log_z_t, contrast.noise_size, self.eps, contrast.valid)
        return self.loss_weight * loss
