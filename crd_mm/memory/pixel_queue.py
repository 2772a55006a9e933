"""Class-wise memories of pixel embeddings for dense (segmentation) contrastive distillation.

:class:`PixelQueue` holds per-class ring buffers of student and teacher pixel
embeddings, the negatives of :class:`~crd_mm.models.losses.PixelCRDLoss`.
:class:`CIRKDMemory` holds CIRKD's per-class teacher pixel and region queues
(Yang et al., CVPR 2022), read by :class:`~crd_mm.models.losses.CIRKDLoss`.
Both are owned by :class:`~crd_mm.memory.CRDMemoryBankHook` like the banks:
losses stage entries, the hook gathers every rank's staged entries and applies
them on every rank (the memories stay identical across ranks), and checkpoints
hold their exact state. Neither needs the training set's size or labels.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine import dist

from .bank import Contrast, all_gather_varying, first_batch_normalizers
from .base import MEMORIES, BaseContrastMemory, normalizer_checksum, state_checksum

IGNORE_INDEX = 255


def unit_rows(shape: Tuple[int, ...], stream: int, dtype) -> torch.Tensor:
    """Random unit vectors along the last axis (Gaussian, normalised), drawn on the CPU."""
    generator = torch.Generator().manual_seed(stream)
    rows = torch.randn(*shape, generator=generator, dtype=torch.float64)
    return F.normalize(rows, dim=-1).to(dtype)


def iteration_generator(seed: int, iteration: int) -> torch.Generator:
    """A CPU generator for one rank's draws of one iteration (rank mixed in, resumable)."""
    mixed = ((seed * 1_000_003 + iteration) * 4099 + dist.get_rank()) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def sample_class_pixels(
    labels: torch.Tensor,
    per_class: int,
    generator: torch.Generator,
    ignore_index: int = IGNORE_INDEX,
) -> List[Tuple[int, int, torch.Tensor]]:
    """Up to ``per_class`` random pixels of every class present in every image.

    Args:
        labels (Tensor): (B, H, W) long class map (``ignore_index`` pixels are skipped).
        per_class (int): pixels drawn per class and image (all of them if fewer).
        generator (torch.Generator): CPU generator of the draws.
        ignore_index (int): label of pixels that belong to no class. Defaults to 255.

    Returns:
        list[tuple]: ``(image, class, flat pixel indices into the image)`` in
        image order, classes ascending; indices on ``labels``' device.
    """
    groups = []
    flat = labels.flatten(1)
    for image in range(flat.shape[0]):
        classes = torch.unique(flat[image])
        for cls in classes.tolist():
            if cls == ignore_index:
                continue
            where = (flat[image] == cls).nonzero().squeeze(1)
            order = torch.randperm(where.numel(), generator=generator)[:per_class]
            groups.append((image, cls, where[order.to(where.device)]))
    return groups


def check_class_labels(labels: torch.Tensor, num_classes: int, ignore_index: int, who: str):
    """Refuse labels outside [0, num_classes) other than ``ignore_index``."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        values = sorted(set(labels[bad].unique().tolist()))
        raise ValueError(
            f'{who} got class labels {values[:8]} outside [0, {num_classes}) that are not the '
            f"ignore label {ignore_index}: set num_classes to the dataset's number of classes "
            'and ignore_index to its ignore label (reduce_zero_label datasets map 0 to 255)'
        )


def ring_write(queue: torch.Tensor, ptr: int, rows: torch.Tensor) -> int:
    """Write ``rows`` (n, D) one after another from ``ptr`` in a ring ``queue`` (Q, D).

    The result is that of writing the rows one at a time (with n > Q only the
    last Q survive, at the slots they would reach). Returns the new pointer.
    """
    size, num = queue.shape[0], rows.shape[0]
    slots = (ptr + torch.arange(num, device=queue.device)) % size
    queue.index_copy_(0, slots[-size:], rows[-size:].to(queue.dtype))
    return (ptr + num) % size


@MEMORIES.register_module()
class PixelQueue(BaseContrastMemory):
    """Per-class ring buffers of student and teacher pixel embeddings, identical on every rank.

    For a student anchor pixel of class c the positive is the teacher embedding of
    the same pixel and the negatives are the queued teacher embeddings of every
    other class (symmetrically for teacher anchors with student entries); queued
    entries of class c are masked out, so negatives are pixels of other classes,
    as class-aware CRD on images. Entries start as random unit vectors (all
    C x Q slots are negatives from the first step, as in MoCo and CIRKD).

    NCE normalisation follows :class:`~crd_mm.memory.ContrastQueue`: the noise
    distribution is uniform over the C x Q entries, Z = mean(exp(score)) x C Q
    from the first batch (averaged over ranks) and kept.

    Memory: C x Q x D x bytes x 2.

    Args:
        num_classes (int): C.
        queue_size (int): Q, entries per class.
        feat_dim (int): D.
        device: where the entries live. Defaults to 'cpu'.
        dtype (torch.dtype): storage dtype. Defaults to torch.float32.
        seed (int): seeds the initial entries and, with the iteration and the
            rank, the pixel draws. Defaults to 0.
    """

    kind = 'pixel_queue'

    def __init__(
        self,
        num_classes: int,
        queue_size: int,
        feat_dim: int,
        device='cpu',
        dtype=torch.float32,
        seed: int = 0,
    ):
        if num_classes < 2 or queue_size < 1 or feat_dim < 1:
            raise ValueError(
                'PixelQueue needs num_classes >= 2 (negatives are pixels of other classes), '
                f'queue_size >= 1 and feat_dim >= 1; got {num_classes}, {queue_size}, {feat_dim}'
            )
        self.num_classes, self.queue_size, self.feat_dim = num_classes, queue_size, feat_dim
        self.device, self.dtype, self.seed = torch.device(device), dtype, seed
        shape = (num_classes, queue_size, feat_dim)
        self.student = unit_rows(shape, seed * 2, dtype).to(self.device)
        self.teacher = unit_rows(shape, seed * 2 + 1, dtype).to(self.device)
        self.ptr = torch.zeros(num_classes, dtype=torch.long, device=self.device)
        self.written = torch.zeros(num_classes, dtype=torch.long, device=self.device)
        self.normalizers: Optional[torch.Tensor] = None
        self.generator = iteration_generator(seed, 0)
        self._staged = []

    @classmethod
    def from_spec(cls, spec, num_samples, labels, device, dtype, seed):
        """A queue of ``spec['queue_size']`` entries per class of ``spec['num_classes']``."""
        return cls(
            spec['num_classes'],
            spec['queue_size'],
            spec['feat_dim'],
            device=device,
            dtype=dtype,
            seed=seed,
        )

    def reseed(self, iteration: int) -> None:
        """Seed this iteration's pixel draws (per rank; a resumed run draws the same)."""
        self.generator = iteration_generator(self.seed, iteration)

    @property
    def entry_classes(self) -> torch.Tensor:
        """(C Q,) the class of each entry in class-major order."""
        return torch.arange(self.num_classes, device=self.device).repeat_interleave(self.queue_size)

    # ---------------------------------------------------------------- reading
    def contrast(
        self, classes: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor
    ) -> Contrast:
        """Rows: the anchors' own (detached) embeddings, then all C Q entries (shared negatives).

        ``valid`` masks the entries of each anchor's class out of its negatives.
        """
        num = classes.numel()
        rows_s = torch.cat([student.detach().to(self.dtype), self.student.flatten(0, 1)])
        rows_t = torch.cat([teacher.detach().to(self.dtype), self.teacher.flatten(0, 1)])
        valid = self.entry_classes[None, :] != classes[:, None]
        valid = torch.cat([valid.new_ones(num, 1), valid], 1)
        positive = torch.arange(num, device=self.device)
        total = self.num_classes * self.queue_size
        negative = torch.arange(num, num + total, device=self.device)
        return Contrast(rows_s, rows_t, positive, negative, valid, total)

    def log_normalizers(
        self,
        scores_student: torch.Tensor,
        scores_teacher: torch.Tensor,
        valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """(log Z_s, log Z_t), Z = C Q x mean(exp(score)) over the first batch's valid scores."""
        if self.normalizers is None:
            self.normalizers = first_batch_normalizers(
                scores_student, scores_teacher, self.num_classes * self.queue_size, valid
            )
        return self.normalizers.log()

    # ---------------------------------------------------------------- updates
    def stage(self, classes: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor):
        """Keep this rank's pixel embeddings (n, D) and their classes (n,) until applied."""
        dtype = torch.promote_types(self.dtype, torch.float32)
        self._staged.append(
            (classes.detach().long(), student.detach().to(dtype), teacher.detach().to(dtype))
        )

    def apply_staged(self) -> Dict[str, float]:
        """Enqueue every rank's staged pixels per class, in rank order. Collective.

        Non-finite rows are skipped; a class with more than Q new pixels keeps the last Q.
        """
        if self._staged:
            classes = torch.cat([c for c, _, _ in self._staged]).to(self.device)
            rows = torch.cat([torch.cat([s, t], 1) for _, s, t in self._staged]).to(self.device)
        else:
            classes = torch.zeros(0, dtype=torch.long, device=self.device)
            dtype = torch.promote_types(self.dtype, torch.float32)
            rows = torch.zeros(0, 2 * self.feat_dim, device=self.device, dtype=dtype)
        self._staged = []
        classes = torch.cat(all_gather_varying(classes))
        rows = torch.cat(all_gather_varying(rows))
        finite = torch.isfinite(rows).all(1)
        classes, rows = classes[finite], rows[finite]
        for cls in torch.unique(classes).tolist():
            mine = rows[classes == cls]
            ptr = int(self.ptr[cls])
            ring_write(self.student[cls], ptr, mine[:, : self.feat_dim])
            self.ptr[cls] = ring_write(self.teacher[cls], ptr, mine[:, self.feat_dim :])
            self.written[cls] += mine.shape[0]
        fill = self.written.clamp(max=self.queue_size).float().mean() / self.queue_size
        return dict(queue_fill=float(fill), skipped=float((~finite).sum()))

    def fingerprint(self) -> torch.Tensor:
        """A float64 checksum of the entries, the pointers and Z."""
        order = torch.arange(1, self.num_classes + 1, device=self.device, dtype=torch.float64)
        counters = [self.ptr.double() * order, self.written.double() * order]
        rows = state_checksum([self.student, self.teacher], counters)
        return torch.cat([rows, normalizer_checksum(self.normalizers, self.device)])

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return dict(
            kind=self.kind,
            num_classes=self.num_classes,
            queue_size=self.queue_size,
            feat_dim=self.feat_dim,
            seed=self.seed,
            ptr=self.ptr.cpu(),
            written=self.written.cpu(),
            student=self.student.cpu(),
            teacher=self.teacher.cpu(),
            normalizers=None if self.normalizers is None else self.normalizers.cpu(),
        )

    def load_state_dict(self, state: dict, name: str = 'pixel queue'):
        """Restore exactly (entries, pointers, Z); classes, queue size and width must match."""
        saved = (state['num_classes'], state['queue_size'], state['feat_dim'])
        needed = (self.num_classes, self.queue_size, self.feat_dim)
        if saved != needed:
            raise ValueError(
                f"the checkpoint's {name} (num_classes, queue_size, feat_dim) is {saved} but this "
                f'run needs {needed}: resume with the same config, or start a new run with '
                'load_from= (weights only)'
            )
        self.student = state['student'].to(self.device, self.dtype)
        self.teacher = state['teacher'].to(self.device, self.dtype)
        self.ptr = state['ptr'].to(self.device)
        self.written = state['written'].to(self.device)
        z = state['normalizers']
        self.normalizers = None if z is None else z.to(self.device)
        self.seed = state['seed']
        self._staged = []


@MEMORIES.register_module()
class CIRKDMemory(BaseContrastMemory):
    """CIRKD's class-wise teacher pixel and region queues, identical on every rank.

    Per class c: a pixel queue of P teacher pixel embeddings and a region queue
    of R teacher region embeddings (the mean of an image's class-c pixel
    embeddings, L2-normalised), both initialised to random unit vectors, with
    one pointer each. Enqueueing follows the CIRKD authors' rule: for every
    image of every rank (rank order), for every class present, one region entry
    at the region pointer (+1 mod R), and K = min(pixels of the class,
    ``pixel_update_freq``) random pixels written at ptr..ptr+K, or to the last
    K slots with the pointer reset to 0 when ptr + K >= P. The random pixels are
    chosen on the rank that stages them (before the gather), so every rank
    applies the same entries.

    Memory: C x (P + R) x D x bytes.

    Args:
        num_classes (int): C.
        pixel_memory_size (int): P (CIRKD: 20000).
        region_memory_size (int): R (CIRKD: 2000).
        feat_dim (int): D, the teacher's channel count.
        pixel_update_freq (int): pixels enqueued per class and image (CIRKD: 16).
            Defaults to 16.
        device: where the queues live. Defaults to 'cpu'.
        dtype (torch.dtype): storage dtype. Defaults to torch.float32.
        seed (int): seeds the initial entries and the draws. Defaults to 0.
    """

    kind = 'cirkd_memory'

    def __init__(
        self,
        num_classes: int,
        pixel_memory_size: int,
        region_memory_size: int,
        feat_dim: int,
        pixel_update_freq: int = 16,
        device='cpu',
        dtype=torch.float32,
        seed: int = 0,
    ):
        if min(num_classes, pixel_memory_size, region_memory_size, feat_dim) < 1:
            raise ValueError(
                'CIRKDMemory needs num_classes, pixel_memory_size, region_memory_size and '
                f'feat_dim >= 1; got {num_classes}, {pixel_memory_size}, {region_memory_size}, '
                f'{feat_dim}'
            )
        if not 1 <= pixel_update_freq <= pixel_memory_size:
            raise ValueError(
                f'pixel_update_freq must be between 1 and pixel_memory_size ({pixel_memory_size}),'
                f' got {pixel_update_freq}'
            )
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.pixel_memory_size, self.region_memory_size = pixel_memory_size, region_memory_size
        self.pixel_update_freq = pixel_update_freq
        self.device, self.dtype, self.seed = torch.device(device), dtype, seed
        self.pixels = unit_rows((num_classes, pixel_memory_size, feat_dim), seed * 2, dtype).to(
            self.device
        )
        self.regions = unit_rows(
            (num_classes, region_memory_size, feat_dim), seed * 2 + 1, dtype
        ).to(self.device)
        self.pixel_ptr = torch.zeros(num_classes, dtype=torch.long, device=self.device)
        self.region_ptr = torch.zeros(num_classes, dtype=torch.long, device=self.device)
        self.generator = iteration_generator(seed, 0)
        self._staged = []

    @classmethod
    def from_spec(cls, spec, num_samples, labels, device, dtype, seed):
        """The queues a ``CIRKDLoss`` spec asks for."""
        return cls(
            spec['num_classes'],
            spec['pixel_memory_size'],
            spec['region_memory_size'],
            spec['feat_dim'],
            pixel_update_freq=spec.get('pixel_update_freq', 16),
            device=device,
            dtype=dtype,
            seed=seed,
        )

    def reseed(self, iteration: int) -> None:
        """Seed this iteration's draws (per rank; a resumed run draws the same)."""
        self.generator = iteration_generator(self.seed, iteration)

    def sample_slots(self, size: int, queue: str) -> torch.Tensor:
        """CIRKD's sampling: the first ``size`` of one random permutation of a queue's slots."""
        length = self.pixel_memory_size if queue == 'pixel' else self.region_memory_size
        return torch.randperm(length, generator=self.generator)[:size].to(self.device)

    def entries(self, queue: str, slots: torch.Tensor) -> torch.Tensor:
        """(C x len(slots), D): the same slots of every class, class-major (CIRKD's order)."""
        memory = self.pixels if queue == 'pixel' else self.regions
        return memory[:, slots].flatten(0, 1)

    # ---------------------------------------------------------------- updates
    def stage(self, teacher: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255):
        """Choose this rank's entries from unit teacher maps (B, D, H, W) and labels (B, H, W)."""
        teacher = teacher.detach().to(torch.promote_types(self.dtype, torch.float32))
        flat = teacher.flatten(2)
        regions, region_cls, pixels, sizes, pixel_cls = [], [], [], [], []
        for image in range(labels.shape[0]):
            label = labels[image].flatten()
            for cls in torch.unique(label).tolist():
                if cls == ignore_index:
                    continue
                where = (label == cls).nonzero().squeeze(1)
                regions.append(F.normalize(flat[image][:, where].mean(1), dim=0))
                region_cls.append(cls)
                order = torch.randperm(where.numel(), generator=self.generator)
                chosen = where[order[: self.pixel_update_freq].to(where.device)]
                pixels.append(F.normalize(flat[image][:, chosen].t(), dim=1))
                sizes.append(chosen.numel())
                pixel_cls.append(cls)
        self._staged.append((regions, region_cls, pixels, sizes, pixel_cls))

    def apply_staged(self) -> Dict[str, float]:
        """Enqueue all ranks' staged entries on every rank, in rank and image order. Collective."""
        regions, region_cls, pixels, sizes, pixel_cls = [], [], [], [], []
        for r, rc, p, s, pc in self._staged:
            regions += r
            region_cls += rc
            pixels += p
            sizes += s
            pixel_cls += pc
        self._staged = []
        long = dict(dtype=torch.long, device=self.device)
        width = self.feat_dim
        gathered = [
            torch.stack(regions).to(self.device)
            if regions
            else torch.zeros(0, width).to(self.device),
            torch.tensor(region_cls, **long),
            torch.cat(pixels).to(self.device) if pixels else torch.zeros(0, width).to(self.device),
            torch.tensor(sizes, **long),
            torch.tensor(pixel_cls, **long),
        ]
        regions, region_cls, pixels, sizes, pixel_cls = [
            torch.cat(all_gather_varying(t)) for t in gathered
        ]
        for row, cls in zip(regions, region_cls.tolist()):
            ptr = int(self.region_ptr[cls])
            self.regions[cls, ptr] = row.to(self.dtype)
            self.region_ptr[cls] = (ptr + 1) % self.region_memory_size
        start = 0
        for k, cls in zip(sizes.tolist(), pixel_cls.tolist()):
            rows = pixels[start : start + k].to(self.dtype)
            start += k
            ptr = int(self.pixel_ptr[cls])
            if ptr + k >= self.pixel_memory_size:
                self.pixels[cls, self.pixel_memory_size - k :] = rows
                self.pixel_ptr[cls] = 0
            else:
                self.pixels[cls, ptr : ptr + k] = rows
                self.pixel_ptr[cls] = (ptr + k) % self.pixel_memory_size
        return dict(regions_enqueued=float(region_cls.numel()), pixels_enqueued=float(start))

    def fingerprint(self) -> torch.Tensor:
        """A float64 checksum of both queues and their pointers."""
        order = torch.arange(1, self.num_classes + 1, device=self.device, dtype=torch.float64)
        counters = [self.pixel_ptr.double() * order, self.region_ptr.double() * order]
        return state_checksum([self.pixels, self.regions], counters)

    # ------------------------------------------------------------ checkpoint
    def _shape(self) -> tuple:
        return (self.num_classes, self.pixel_memory_size, self.region_memory_size, self.feat_dim)

    def state_dict(self) -> dict:
        return dict(
            kind=self.kind,
            shape=self._shape(),
            seed=self.seed,
            pixels=self.pixels.cpu(),
            regions=self.regions.cpu(),
            pixel_ptr=self.pixel_ptr.cpu(),
            region_ptr=self.region_ptr.cpu(),
        )

    def load_state_dict(self, state: dict, name: str = 'CIRKD memory'):
        """Restore exactly (entries and pointers); classes, sizes and width must match."""
        if tuple(state['shape']) != self._shape():
            raise ValueError(
                f"the checkpoint's {name} (num_classes, pixel_memory_size, region_memory_size, "
                f'feat_dim) is {tuple(state["shape"])} but this run needs {self._shape()}: resume '
                'with the same config, or start a new run with load_from= (weights only)'
            )
        self.pixels = state['pixels'].to(self.device, self.dtype)
        self.regions = state['regions'].to(self.device, self.dtype)
        self.pixel_ptr = state['pixel_ptr'].to(self.device)
        self.region_ptr = state['region_ptr'].to(self.device)
        self.seed = state['seed']
        self._staged = []
