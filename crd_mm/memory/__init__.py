"""Memory banks of contrastive losses and the hook that owns them."""

from .bank import ContrastMemoryBank, MemoryBankClient
from .base import MEMORIES, BaseContrastMemory, build_memory
from .hook import CRDMemoryBankHook
from .queue import ContrastQueue
from .sharded import ShardedMemoryBank

__all__ = [
    'MEMORIES',
    'BaseContrastMemory',
    'build_memory',
    'ContrastMemoryBank',
    'MemoryBankClient',
    'CRDMemoryBankHook',
    'ContrastQueue',
    'ShardedMemoryBank',
]
