"""Helpers shared by crd_mm's command-line tools."""

from .launch import parse_launcher_args, setup_cpu_distributed, teardown_distributed

__all__ = ['parse_launcher_args', 'setup_cpu_distributed', 'teardown_distributed']
