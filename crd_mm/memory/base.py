"""The one interface every contrastive memory implements, and the registry the hook builds from.

As mmengine's ``BaseAveragedModel`` is to ``EMAHook``, :class:`BaseContrastMemory` is to
``CRDMemoryBankHook``: the hook only calls the methods declared here, and builds each
loss's memory from the ``MEMORIES`` registry by the type its loss asks for, so a new
memory (a pixel queue for segmentation, say) is a registered subclass and needs no change
to the hook.
"""

from abc import ABCMeta, abstractmethod
from typing import Dict, Optional, Sequence

import torch
from mmengine.registry import Registry

MEMORIES = Registry('contrast memory', locations=['crd_mm.memory'])

# What a loss's ``bank_requirements()['memory']`` names, for the two built-in kinds; any
# other value is taken as a type registered in MEMORIES.
BANK, QUEUE = 'bank', 'queue'


class BaseContrastMemory(metaclass=ABCMeta):
    """Training state of one contrastive loss, kept identical on every rank by the hook.

    Subclasses are registered in :data:`MEMORIES` and built by
    :meth:`from_spec`. The hook calls, in a training iteration,
    :meth:`reseed` before the forward pass and :meth:`apply_staged` after it
    (a collective: every rank applies every rank's staged entries), compares
    :meth:`fingerprint` across ranks after building and resuming, and writes
    :meth:`state_dict` into checkpoints (restored by :meth:`load_state_dict`
    only when the runner resumes).

    The memories ``CRDLoss`` reads (banks, sharded banks, the queue) also share
    the loss's calls, each step and on every rank: ``check_indices(idx)``,
    ``anchor_labels(idx, claimed)`` (the batch samples' classes the memory
    draws with, None if it draws none; a bank refuses ``claimed``, the data
    samples' labels, where they disagree with the training set's),
    ``contrast(idx, student, teacher, ..., labels=None)``, ``log_normalizers``
    and ``stage(idx, student, teacher, labels=None)``; ``labels`` are
    ``anchor_labels``' answer, so a memory need not keep the training set's
    labels to serve them (a sharded bank and a queue keep none).

    Attributes:
        kind (str): names the state format in checkpoints; a resume refuses a
            checkpoint whose memory for a loss is of another kind.
        collective_state (bool): whether :meth:`state_dict` is this rank's part
            of the state (a sharded memory's rows), to be called on every rank:
            the hook then writes each rank's part to its own file just before
            ``CheckpointHook`` saves on rank 0, and the checkpoint records where
            (a resume passes ``per_rank``, every rank's part opened with
            ``mmap=True``; a memory that is not collective gets the parts'
            ``row_keys`` concatenated). Defaults to False.
        normalizers (Tensor, optional): NCE constants (Z_student, Z_teacher) to
            log, or None.
    """

    kind: str = ''
    collective_state: bool = False
    normalizers: Optional[torch.Tensor] = None

    @classmethod
    @abstractmethod
    def from_spec(
        cls, spec: dict, num_samples: int, labels, device, dtype: torch.dtype, seed: int
    ) -> 'BaseContrastMemory':
        """Build the memory a loss's ``bank_requirements()`` spec asks for.

        Args:
            spec (dict): the loss's requirements (``feat_dim``, ``momentum``,
                ``queue_size``, ... as the memory needs).
            num_samples (int): rows of the training set (distinct samples).
            labels (np.ndarray, optional): one class per row when the spec has
                ``needs_labels``, else None.
            device: the model's device.
            dtype (torch.dtype): storage dtype of the embeddings.
            seed (int): identical on every rank.
        """

    @abstractmethod
    def reseed(self, iteration: int) -> None:
        """Seed this iteration's sampling (identical on a resumed run)."""

    @abstractmethod
    def apply_staged(self) -> Dict[str, float]:
        """Apply every rank's staged entries on every rank; returns health scalars to log."""

    @abstractmethod
    def fingerprint(self) -> torch.Tensor:
        """A float64 checksum of the state, to check that all ranks agree with one all-reduce."""

    @abstractmethod
    def state_dict(self) -> Optional[dict]:
        """The state to checkpoint (this rank's part for a collective state)."""

    @abstractmethod
    def load_state_dict(self, state: dict, name: str = 'memory') -> None:
        """Restore :meth:`state_dict`'s output exactly; ``name`` goes into error messages."""

    @staticmethod
    def state_kind(state: dict) -> str:
        """The kind of a checkpointed state (states written before ``kind`` existed included)."""
        return state.get('kind') or (QUEUE if 'queue_size' in state else BANK)


def state_checksum(rows: Sequence[torch.Tensor], counters: Sequence[torch.Tensor] = ()):
    """float64 checksums for :meth:`BaseContrastMemory.fingerprint`, one per tensor.

    Each tensor of ``rows`` (embeddings of width D, last axis) gives the sum of its rows'
    dot products with (1, ..., D); each of ``counters`` (already weighted by position where
    order matters) gives its sum.
    """
    weights = torch.arange(1, rows[0].shape[-1] + 1, device=rows[0].device, dtype=torch.float64)
    return torch.stack(
        [r.double().matmul(weights).sum() for r in rows] + [c.double().sum() for c in counters]
    )


def normalizer_checksum(normalizers: Optional[torch.Tensor], device) -> torch.Tensor:
    """The NCE constants (Z_student, Z_teacher) in float64; zeros before they are set."""
    if normalizers is None:
        return torch.zeros(2, device=device, dtype=torch.float64)
    return normalizers.double()


def memory_type(spec: dict, shard_banks: bool) -> str:
    """The registered type of a loss's memory: its ``memory`` key, 'bank'/'queue' aliased."""
    requested = spec.get('memory', BANK)
    if requested == BANK:
        return 'ShardedMemoryBank' if shard_banks else 'ContrastMemoryBank'
    if requested == QUEUE:
        return 'ContrastQueue'
    return requested


def build_memory(
    spec: dict, shard_banks: bool, num_samples: int, labels, device, dtype, seed: int
) -> BaseContrastMemory:
    """Build a loss's memory from :data:`MEMORIES`; an unknown type names the registered ones."""
    name = memory_type(spec, shard_banks)
    memory_cls = MEMORIES.get(name)
    if memory_cls is None:
        raise KeyError(
            f'no contrast memory is registered as {name!r} '
            f"(a loss's memory={spec.get('memory')!r}); registered: "
            f'{sorted(MEMORIES.module_dict)}. Register it with '
            '@MEMORIES.register_module() from crd_mm.memory.base.'
        )
    return memory_cls.from_spec(spec, num_samples, labels, device, dtype, seed)
