"""Memory banks of contrastive losses and the hook that owns them."""

from .bank import ContrastMemoryBank, MemoryBankClient
from .hook import CRDMemoryBankHook
from .queue import ContrastQueue
from .sharded import ShardedMemoryBank

__all__ = [
    'ContrastMemoryBank',
    'MemoryBankClient',
    'CRDMemoryBankHook',
    'ContrastQueue',
    'ShardedMemoryBank',
]
