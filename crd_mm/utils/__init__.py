"""Helpers shared by crd_mm's command-line tools."""
from .launch import setup_cpu_distributed, teardown_distributed

__all__ = ['setup_cpu_distributed', 'teardown_distributed']
