"""Helpers shared by crd_mm's command-line tools."""

from .launch import (
    add_cfg_options_argument,
    build_runner,
    parse_launcher_args,
    set_dataloader_defaults,
    set_work_dir,
    setup_cpu_distributed,
    teardown_distributed,
)

__all__ = [
    'add_cfg_options_argument',
    'build_runner',
    'parse_launcher_args',
    'set_dataloader_defaults',
    'set_work_dir',
    'setup_cpu_distributed',
    'teardown_distributed',
]
