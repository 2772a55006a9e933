"""Memory banks of contrastive losses and the hook that owns them."""
from .bank import ContrastMemoryBank, MemoryBankClient
from .hook import CRDMemoryBankHook

__all__ = ['ContrastMemoryBank', 'MemoryBankClient', 'CRDMemoryBankHook']
