"""CRCD: Complementary Relation Contrastive Distillation (Zhu et al., CVPR 2021)."""

import math
from typing import Optional, Sequence, Union

import mmrazor.models  # noqa: F401  (mmrazor's registrations first, as for CRDLoss)
import torch
import torch.nn.functional as F
from mmrazor.registry import MODELS
from torch import nn

from ...memory import MemoryBankClient
from .crd_loss import check_bank_loss_settings, checked_batch_indices, compute_dtype, nce_loss

RELATIONS = ('feature', 'gradient')
GRADIENT_REDUCTIONS = ('sum', 'mean')
GRADIENT_COMBINES = ('add', 'multiply_kd')
# the authors' code adds this to every relation vector before normalising it
RELATION_SHIFT = 1e-6


def relation_scores(
    embeds: torch.Tensor,
    bank: torch.Tensor,
    anchor_idx: torch.Tensor,
    contrast_idx: torch.Tensor,
    temperature: float,
    include_self_pairs: bool = False,
) -> torch.Tensor:
    """<normalize(w - a), normalize(v_i - a)> / T for every pair (i, a) and candidate w.

    ``embeds`` v: (B, D) with gradient; anchors a: the bank rows ``anchor_idx``
    (B,) of the batch; candidates w: the bank rows ``contrast_idx`` (B, K + 1),
    column 0 the positive. The relation vectors are never materialised (that
    would be B^2 (K + 1) D numbers): the cosine is expanded into dot products,
    so memory grows as B^2 (K + 1) only. A candidate at the anchor's own row
    (the positive of the pair a = i, or a negative drawn at a batch sample's
    index) has w - a = 0; it is recognised by index, since the expansion cannot
    resolve a zero difference in float32, and so is any relation vector (w - a
    or v_i - a) too short for the expansion to resolve (rows that coincide).

    Without ``include_self_pairs`` the pairs a = i are left out and a zero
    relation vector scores 0 (F.normalize's zero vector); returns
    (B (B - 1), K + 1). With it, the authors' form: every relation is
    normalize(x - a + 1e-6), all B^2 pairs are kept (row i * B + a) and a
    zero relation vector points along ones / sqrt(D); returns (B^2, K + 1).
    """
    dtype = compute_dtype(embeds)
    batch, num_candidates = contrast_idx.shape
    v = embeds.to(dtype)
    a = bank.index_select(0, anchor_idx).to(dtype)
    if include_self_pairs:
        a = a - RELATION_SHIFT  # normalize(x - a + s) = normalize(x - (a - s))
    w = bank.index_select(0, contrast_idx.reshape(-1)).view(batch, num_candidates, -1).to(dtype)
    wv = torch.bmm(w, v.unsqueeze(2))  # (B, K+1, 1)   <w_ik, v_i>
    wa = torch.matmul(w, a.t())  # (B, K+1, B)   <w_ik, a>
    av = (v @ a.t()).unsqueeze(1)  # (B, 1, B)     <v_i, a>
    aa = (a * a).sum(1)  # (B,)          |a|^2
    ww = (w * w).sum(2, keepdim=True)  # (B, K+1, 1)   |w_ik|^2
    vv = (v * v).sum(1)[:, None, None]  # (B, 1, 1)     |v_i|^2
    sq_w = ww - 2 * wa + aa  # |w_ik - a|^2
    sq_v = vv - 2 * av + aa  # |v_i - a|^2
    # Below this squared length the expansion cannot resolve a relation vector's direction
    # (rounding of the dot products of unit rows): such a vector counts as zero. Zero
    # vectors arise as a candidate at the anchor's own row, rows that coincide (e.g. the
    # teacher's gradient embeddings of samples it classifies perfectly) and an embedding
    # equal to its anchor.
    tiny = 32 * torch.finfo(dtype).eps
    zero_w = (contrast_idx[:, :, None] == anchor_idx[None, None, :]) | (sq_w <= tiny)  # (B, K+1, B)
    zero_v = sq_v <= tiny  # (B, 1, B)
    norm_w, norm_v = sq_w.clamp_min(tiny).sqrt(), sq_v.clamp_min(tiny).sqrt()
    cosine = (wv - wa - av + aa) / (norm_w * norm_v)
    if include_self_pairs:
        # the authors' shift turns a zero relation vector into the direction ones / sqrt(D)
        root_d = math.sqrt(v.shape[1])
        w_along_ones = (v.sum(1)[:, None, None] - a.sum(1)) / (root_d * norm_v)
        v_along_ones = (w.sum(2, keepdim=True) - a.sum(1)) / (root_d * norm_w)
        cosine = torch.where(zero_w, w_along_ones, torch.where(zero_v, v_along_ones, cosine))
        cosine = torch.where(zero_w & zero_v, 1.0, cosine)
        return cosine.permute(0, 2, 1).reshape(batch * batch, num_candidates) / temperature
    cosine = torch.where(zero_w | zero_v, 0.0, cosine)  # F.normalize's zero vector
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=cosine.device)
    return cosine.permute(0, 2, 1)[off_diagonal] / temperature  # (B(B-1), K+1)


def feature_gradients(
    feats: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    fc_weight: Optional[torch.Tensor] = None,
    reduction: str = 'sum',
) -> torch.Tensor:
    """d CE(logits, labels) / d feats: CRCD's gradient element.

    ``reduction`` is the cross-entropy's over the batch: 'sum' gives each
    sample's own gradient, 'mean' (the authors' code) that divided by B.
    With ``fc_weight`` (a frozen teacher run without autograd) it is the closed
    form (softmax(logits) - onehot) @ W of a linear head; otherwise it is taken
    by double backpropagation (``create_graph=True``), so the loss on it trains
    the student's network.
    """
    if fc_weight is not None:
        residual = logits.detach().softmax(1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        if reduction == 'mean':
            residual = residual / logits.shape[0]
        return residual @ fc_weight.detach().to(logits.dtype)
    if not feats.requires_grad:
        raise ValueError(
            'the gradient relation needs student features that are part of the '
            "autograd graph: record the input of the student's classifier (e.g. 'neck')"
        )
    task_loss = F.cross_entropy(logits, labels, reduction=reduction)
    return torch.autograd.grad(task_loss, feats, create_graph=True)[0]


def kd_divergence(
    s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's KD term: T^2 KL(softmax(t / T) || softmax(s / T)), averaged over the batch."""
    dtype = compute_dtype(s_logits)
    log_p_s = F.log_softmax(s_logits.to(dtype) / temperature, dim=1)
    log_p_t = F.log_softmax(t_logits.detach().to(dtype) / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True) * temperature**2


def last_tensor(feature: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    return feature[-1] if isinstance(feature, (tuple, list)) else feature


@MODELS.register_module()
class CRCDLoss(nn.Module, MemoryBankClient):
    """CRCD: contrast of anchor-relative relations on CRD's memory banks.

    For a student embedding v_i and a teacher-bank anchor a (a batch sample's
    row), the relation normalize(v_i - a) is contrasted with the teacher-bank
    candidates normalize(bank[k] - a) (k = the sample itself and K negatives)
    by CRD's NCE objective; the symmetric branch swaps student and teacher.
    The banks are ordinary :class:`~crd_mm.memory.ContrastMemoryBank`\\ s owned by
    ``CRDMemoryBankHook``, as for ``CRDLoss``. Cost grows as B^2 (K + 1).

    ``relation='feature'``: ``forward(s_feats, t_feats, data_samples)`` on the
    L2-normalised embeddings of two ``CRDConnector`` heads.
    ``relation='gradient'`` (the complementary element): ``forward(s_feats,
    t_feats, data_samples, s_logits, t_logits, t_fc_weight)`` on the raw
    penultimate features and logits; the task-loss gradients w.r.t. the
    features (student by double backpropagation, frozen teacher in closed
    form from its classifier weight) are embedded by heads owned by this loss
    (``student_channels`` / ``teacher_channels`` -> ``feat_dim``).

    Where this differs from the authors' code (Lechatelia/CRCD, whose README
    calls it unofficial and unchecked), each difference is an option whose
    default is our choice and whose other value is the authors' behaviour:

    - ``include_self_pairs=False``: the pairs anchor = sample are left out.
      Their positive relation is bank[i] - bank[i] = 0, which has no
      direction; the authors keep all B^2 pairs and normalise x - a + 1e-6,
      which turns it into the fixed direction ones / sqrt(D), a target that
      does not depend on the data (``True``: the authors' form, shift included).
    - ``gradient_reduction='sum'``: the gradient element is each sample's own
      gradient of its cross-entropy, independent of the batch size; the
      authors differentiate the batch-mean cross-entropy (``'mean'``), which
      divides it by the per-GPU batch before the embedding head (whose bias
      does not scale), so the embedded direction depends on the batch size.
    - ``gradient_combine='add'``: the gradient relation is added with its own
      ``loss_weight``, like every other distillation term; the authors
      multiply it into the KD term, alpha * KD * L_grad (``'multiply_kd'``:
      this loss then returns ``loss_weight * kd_weight * KD(s_logits,
      t_logits; kd_temperature) * L_grad``, the product differentiated through
      both factors as there; the distiller's own KD loss stays as it is).

    Args:
        loss_weight (float): multiplies the loss.
        relation (str): 'feature' or 'gradient'.
        temperature (float): T of the scores (0.05 in the paper).
        num_negatives (int): K (500 in the paper).
        momentum (float): bank update momentum.
        feat_dim (int): embedding width.
        negative_sampling (str): 'class_exact' or 'uniform', as in ``CRDLoss``.
        student_channels, teacher_channels (int): feature widths, gradient relation only.
        eps (float): numerical guard of the NCE terms.
        include_self_pairs (bool): keep the anchor = sample pairs, in the
            authors' form (see above). Default False.
        gradient_reduction (str): 'sum' or 'mean' (the authors'), gradient
            relation only. Default 'sum'.
        gradient_combine (str): 'add' or 'multiply_kd' (the authors'),
            gradient relation only. Default 'add'.
        kd_weight, kd_temperature (float): alpha and T of the KD factor of
            ``gradient_combine='multiply_kd'``; set them to the distiller's
            KD loss (0.9 and 4 in CRCD's recipes).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        relation: str = 'feature',
        temperature: float = 0.05,
        num_negatives: int = 500,
        momentum: float = 0.5,
        feat_dim: int = 128,
        negative_sampling: str = 'class_exact',
        student_channels: Optional[int] = None,
        teacher_channels: Optional[int] = None,
        eps: float = 1e-7,
        include_self_pairs: bool = False,
        gradient_reduction: str = 'sum',
        gradient_combine: str = 'add',
        kd_weight: float = 0.9,
        kd_temperature: float = 4.0,
    ):
        super().__init__()
        if relation not in RELATIONS:
            raise ValueError(f'relation must be one of {RELATIONS}, got {relation!r}')
        check_bank_loss_settings(
            'CRCDLoss', negative_sampling, num_negatives, temperature, momentum
        )
        if gradient_reduction not in GRADIENT_REDUCTIONS:
            raise ValueError(
                f'gradient_reduction must be one of {GRADIENT_REDUCTIONS}, '
                f'got {gradient_reduction!r}'
            )
        if gradient_combine not in GRADIENT_COMBINES:
            raise ValueError(
                f'gradient_combine must be one of {GRADIENT_COMBINES}, got {gradient_combine!r}'
            )
        if relation == 'feature' and (gradient_reduction, gradient_combine) != ('sum', 'add'):
            raise ValueError(
                "gradient_reduction and gradient_combine apply to relation='gradient' only; "
                "drop them from the feature relation's loss"
            )
        if kd_temperature <= 0:
            raise ValueError(f'kd_temperature must be positive, got {kd_temperature}')
        self.loss_weight = loss_weight
        self.relation = relation
        self.temperature = temperature
        self.num_negatives = num_negatives
        self.momentum = momentum
        self.feat_dim = feat_dim
        self.negative_sampling = negative_sampling
        self.eps = eps
        self.include_self_pairs = include_self_pairs
        self.gradient_reduction = gradient_reduction
        self.gradient_combine = gradient_combine
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        if relation == 'gradient':
            if not student_channels or not teacher_channels:
                raise ValueError(
                    "relation='gradient' embeds the feature gradients itself: set "
                    'student_channels and teacher_channels to the feature widths'
                )
            self.student_head = nn.Linear(student_channels, feat_dim)
            self.teacher_head = nn.Linear(teacher_channels, feat_dim)

    def bank_requirements(self) -> dict:
        return dict(
            feat_dim=self.feat_dim,
            momentum=self.momentum,
            needs_labels=self.negative_sampling == 'class_exact',
        )

    def forward(
        self,
        s_feats,
        t_feats,
        data_samples: Sequence,
        s_logits: Optional[torch.Tensor] = None,
        t_logits: Optional[torch.Tensor] = None,
        t_fc_weight: Optional[torch.Tensor] = None,
    ):
        bank = self.require_memory_bank()
        if self.relation == 'gradient':
            s_feats, t_feats = self.gradient_embeddings(
                s_feats, t_feats, data_samples, s_logits, t_logits, t_fc_weight
            )
        idx = checked_batch_indices('CRCDLoss', bank, data_samples, s_feats, t_feats, self.feat_dim)
        if idx.numel() < (
            1 if self.include_self_pairs else 2
        ):  # e.g. an epoch's last batch: no pair
            if bank.normalizers is None:
                raise ValueError(
                    'CRCD contrasts relations between the samples of a batch: the first '
                    'batch needs at least 2 samples to set the normalisation constants'
                )
            loss = (s_feats.sum() + t_feats.sum()) * 0.0
        else:
            negative = bank.negatives(idx, self.num_negatives, self.negative_sampling, shared=False)
            loss = self.relation_loss(s_feats, t_feats, idx, negative)
            if self.gradient_combine == 'multiply_kd':
                loss = (
                    loss * self.kd_weight * kd_divergence(s_logits, t_logits, self.kd_temperature)
                )
        bank.stage(idx, s_feats, t_feats)
        return loss

    def gradient_embeddings(self, s_feats, t_feats, data_samples, s_logits, t_logits, t_fc_weight):
        if s_logits is None or t_logits is None or t_fc_weight is None:
            raise ValueError(
                "relation='gradient' needs s_logits, t_logits (the classifiers' outputs) and "
                "t_fc_weight (the teacher classifier's weight, a 'Parameter' recorder) in "
                'loss_forward_mappings'
            )
        labels = torch.stack([torch.as_tensor(s.gt_label).reshape(-1)[0] for s in data_samples])
        labels = labels.to(s_logits.device, torch.long)
        s_grad = feature_gradients(
            last_tensor(s_feats), s_logits, labels, reduction=self.gradient_reduction
        )
        t_grad = feature_gradients(
            last_tensor(t_feats),
            t_logits,
            labels,
            fc_weight=t_fc_weight,
            reduction=self.gradient_reduction,
        )
        return (
            F.normalize(self.student_head(s_grad), dim=1),
            F.normalize(self.teacher_head(t_grad.to(self.teacher_head.weight.dtype)), dim=1),
        )

    def relation_loss(
        self,
        s_embeds: torch.Tensor,
        t_embeds: torch.Tensor,
        idx: torch.Tensor,
        negative: torch.Tensor,
    ) -> torch.Tensor:
        """The weighted relation loss for given indices and negatives.

        No sampling, no bank update, no KD factor.
        """
        bank = self.require_memory_bank()
        # the rows these indices address (the banks themselves, or rows fetched from a sharded
        # bank's owners)
        student, teacher, (idx, contrast_idx) = bank.contrast_rows(
            idx, torch.cat([idx[:, None], negative], 1)
        )
        with torch.autocast(device_type=s_embeds.device.type, enabled=False):
            scores_s = relation_scores(
                s_embeds, teacher, idx, contrast_idx, self.temperature, self.include_self_pairs
            )
            scores_t = relation_scores(
                t_embeds, student, idx, contrast_idx, self.temperature, self.include_self_pairs
            )
            log_z_s, log_z_t = bank.log_normalizers(scores_s, scores_t)
            loss = nce_loss(scores_s - log_z_s, bank.num_samples, self.eps) + nce_loss(
                scores_t - log_z_t, bank.num_samples, self.eps
            )
        return self.loss_weight * loss
