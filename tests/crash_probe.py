"""A test-only hook that stalls a training process in the middle of writing a checkpoint file.

Loaded by test configs through ``custom_imports`` (tests/ on PYTHONPATH). When
the checkpoint of epoch ``stall_epoch`` is about to be written (and ``marker``
does not exist yet), it makes the next file of kind ``stall_on`` opened for
writing write half of its first chunk, write the path it was writing into
``marker``, and sleep: the test then kills the process with SIGKILL, so the
kill lands while that file is half written, whatever the save does. A
resumed run finds the marker and saves normally. ``stall_on`` is
``'checkpoint'`` (any ``.pth`` file), ``'last_checkpoint'`` (the file naming
the latest checkpoint, which ``--resume`` reads) or ``'best'`` (a
``best_*.pth`` checkpoint of ``save_best``); ``force_new_best`` makes the
validation of ``stall_epoch`` a new best (whatever its score), so that a best
checkpoint is written then.

``undo`` puts mmengine's own code back in place of crd_mm's patches, so a test
can show that it would catch what they prevent: ``'save'`` restores
``save_checkpoint`` (writes the target file in place), ``'keep'`` restores
``CheckpointHook._save_checkpoint_with_step`` (deletes the oldest checkpoint
before writing the new one), ``'best'`` restores
``CheckpointHook._save_best_checkpoint`` (deletes the previous best before
writing the new one) and ``'last'`` the built-in ``open`` of
``last_checkpoint`` (rewritten in place).
"""

import builtins
import os
import os.path as osp
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

STALL_LIMIT_S = 600  # never outlive a test that forgot to kill us


class _StallingFile:
    """A file opened for writing whose first ``write`` stops halfway and stalls the process."""

    def __init__(self, file, path, marker):
        self._file, self._path, self._marker = file, path, marker

    def write(self, data):  # bytes, a memoryview or (last_checkpoint in place) text
        half = data[: max(1, len(data) // 2)]
        self._file.write(half)
        self._file.flush()
        with open(f'{self._marker}.tmp', 'w') as f:  # complete before the test can see it
            f.write(self._path)
        os.replace(f'{self._marker}.tmp', self._marker)
        time.sleep(STALL_LIMIT_S)
        os._exit(3)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


STALL_ON = {
    'checkpoint': lambda name: name.endswith(('.pth', '.pth.partial')),
    'last_checkpoint': lambda name: name in ('last_checkpoint', 'last_checkpoint.partial'),
    'best': lambda name: name.startswith('best_') and name.endswith(('.pth', '.pth.partial')),
}


@HOOKS.register_module()
class StallDuringSaveHook(Hook):
    priority = 'VERY_LOW'  # after CRDMemoryBankHook has put the banks into the checkpoint

    def __init__(self, marker, stall_epoch=2, undo=(), stall_on='checkpoint', force_new_best=False):
        self.marker, self.stall_epoch = marker, stall_epoch
        self.matches, self.force_new_best = STALL_ON[stall_on], force_new_best
        from mmengine.hooks import CheckpointHook

        if 'save' in undo:
            from mmengine.runner import runner as runner_module

            runner_module.save_checkpoint = runner_module.save_checkpoint.__wrapped__
        if 'keep' in undo:
            CheckpointHook._save_checkpoint_with_step = (
                CheckpointHook._save_checkpoint_with_step.__wrapped__
            )
        if 'best' in undo:
            CheckpointHook._save_best_checkpoint = CheckpointHook._save_best_checkpoint.__wrapped__
        if 'last' in undo:
            from mmengine.hooks import checkpoint_hook

            del checkpoint_hook.open  # the built-in open again

    def before_val_epoch(self, runner):
        if self.force_new_best and runner.epoch == self.stall_epoch:
            runner.message_hub.update_info('best_score', float('-inf'))

    def before_save_checkpoint(self, runner, checkpoint):
        if checkpoint['meta']['epoch'] != self.stall_epoch or osp.exists(self.marker):
            return
        real_open, marker, matches = builtins.open, self.marker, self.matches

        def stalling_open(file, mode='r', *args, **kwargs):
            opened = real_open(file, mode, *args, **kwargs)
            if 'w' in mode and matches(osp.basename(str(file))):
                return _StallingFile(opened, str(file), marker)
            return opened

        builtins.open = stalling_open
