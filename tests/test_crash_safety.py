"""Crash safety of checkpoints: a run killed mid-save keeps its previous checkpoint and resumes.

Checkpoints go through crd_mm.compat's atomic save: ``<name>.partial`` is
written and fsynced, renamed over ``<name>``, then the directory is fsynced.
The same holds for ``last_checkpoint`` (the file ``--resume`` reads), and the
files mmengine's CheckpointHook deletes (the oldest with ``max_keep_ckpts``,
the previous best with ``save_best``) go only once the new one is saved.
A SIGKILL shows the rename (the old file survives a half-written new one); it
cannot show the fsyncs, whose absence only a power cut or a kernel crash
would reveal, so their order is checked in the system calls (strace).
"""

import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.runner import Runner
from tiny_configs import crd_config, image_folder_loader

TESTS_DIR = osp.dirname(osp.abspath(__file__))
PYTHONPATH = {'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])}


# Two ways of keeping only the latest checkpoint, each broken by what crd_mm.compat patches:
# one fixed name overwritten every epoch (an in-place write truncates it) and mmengine's
# max_keep_ckpts=1 (its CheckpointHook deletes the old file before writing the new one).
KEEP_LATEST = {
    'fixed-name': dict(
        checkpoint=dict(filename_tmpl='latest.pth'),
        previous='latest.pth',
        final='latest.pth',
        undo='save',
        killed_file='latest.pth',
    ),
    'max_keep_ckpts=1': dict(
        checkpoint=dict(max_keep_ckpts=1),
        previous='epoch_1.pth',
        final='epoch_2.pth',
        undo='keep',
        killed_file='epoch_2.pth',
    ),
}


def stalled_run_config(data, tmp_path, keep_latest=None, undo=(), stall_on='checkpoint'):
    """Two epochs of CRD, checkpoints every epoch, stalled half-way through writing a file of
    epoch 2's save (``stall_on``, see crash_probe.py); ``'best'`` adds validation and save_best."""
    probe = dict(
        type='StallDuringSaveHook',
        marker=str(tmp_path / 'stalled'),
        undo=undo,
        stall_on=stall_on,
        force_new_best=stall_on == 'best',  # epoch 2 then writes a new best, whatever its score
    )
    cfg = crd_config(
        data,
        tmp_path / 'work',
        max_epochs=2,
        hooks=[dict(type='CRDMemoryBankHook'), probe],
        extra_imports=('crash_probe',),
    )
    if keep_latest is not None:
        cfg.default_hooks.checkpoint.update(KEEP_LATEST[keep_latest]['checkpoint'])
    if stall_on == 'best':
        cfg.merge_from_dict(
            dict(
                train_cfg=dict(val_interval=1),
                val_dataloader=image_folder_loader(data, shuffle=False),
                val_evaluator=dict(_scope_='mmpretrain', type='Accuracy', topk=(1,)),
                val_cfg=dict(),
            )
        )
        cfg.default_hooks.checkpoint.update(save_best='accuracy/top1', rule='greater')
    path = tmp_path / 'crd_crash.py'
    cfg.dump(path)
    return path


def kill_when_stalled(cmd, config, marker, timeout=180):
    """Start tools/train.py, SIGKILL it once it has stalled half-way through a checkpoint write."""
    proc = cmd.start([sys.executable, 'tools/train.py', config], env=PYTHONPATH)
    stalled = False
    try:
        deadline = time.monotonic() + timeout
        while not osp.exists(marker) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        stalled = osp.exists(marker)
        if stalled:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None and not stalled:
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    assert stalled, (
        f'the run never reached the stalled save (exit {proc.returncode}):\n{out[-6000:]}'
    )
    assert proc.returncode == -signal.SIGKILL
    with open(marker) as f:
        return f.read()


@pytest.mark.parametrize('keep_latest', list(KEEP_LATEST))
def test_a_run_killed_while_saving_keeps_its_checkpoint_and_resumes(
    make_imagefolder, tmp_path, cmd, keep_latest
):
    case = KEEP_LATEST[keep_latest]
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    config = stalled_run_config(data, tmp_path, keep_latest)
    work = tmp_path / 'work'

    written = kill_when_stalled(cmd, config, tmp_path / 'stalled')
    assert (
        written == f'{work / case["killed_file"]}.partial'
    )  # killed while the new checkpoint was half written
    previous = torch.load(
        work / case['previous'], map_location='cpu'
    )  # weights_only, crd_mm's allow-list
    assert previous['meta']['epoch'] == 1 and previous['meta']['iter'] == 2
    banks = previous['crd_memory_banks']['distiller.distill_losses.loss_crd']
    assert banks['written'].all() and banks['normalizers'] is not None

    out = cmd.python(
        ['tools/train.py', config, '--resume', '--cfg-options', 'log_level=INFO'],
        env=PYTHONPATH,
        timeout=180,
    )
    assert re.search(
        rf'Auto resumed from the latest checkpoint \S*{re.escape(case["previous"])}', out
    )
    assert 'resumed epoch: 1, iter: 2' in out
    final = torch.load(work / case['final'], map_location='cpu')
    assert final['meta']['epoch'] == 2 and final['meta']['iter'] == 4
    assert not torch.equal(
        final['crd_memory_banks']['distiller.distill_losses.loss_crd']['student'], banks['student']
    )
    assert sorted(p.name for p in work.glob('*.pth')) == [
        case['final']
    ]  # still keeps only the latest


@pytest.mark.slow
@pytest.mark.parametrize('keep_latest', list(KEEP_LATEST))
def test_the_kill_test_catches_what_compat_prevents(make_imagefolder, tmp_path, cmd, keep_latest):
    """Control: with mmengine's own code (in-place write; delete before save) the same kill loses
    the checkpoint."""
    case = KEEP_LATEST[keep_latest]
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    config = stalled_run_config(data, tmp_path, keep_latest, undo=(case['undo'],))
    work = tmp_path / 'work'
    written = kill_when_stalled(cmd, config, tmp_path / 'stalled')
    if case['undo'] == 'save':
        assert written == str(work / case['killed_file'])  # the checkpoint itself, in place
        with pytest.raises((RuntimeError, EOFError)):  # a truncated zip archive, or an empty file
            torch.load(work / case['previous'], map_location='cpu')
    else:
        assert not (work / case['previous']).exists()


def test_a_run_killed_while_naming_its_last_checkpoint_resumes_from_the_previous_one(
    make_imagefolder, tmp_path, cmd
):
    """``last_checkpoint`` (what --resume reads) is replaced atomically: a kill mid-write keeps
    the previous complete path, and the run resumes from it."""
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    config = stalled_run_config(data, tmp_path, stall_on='last_checkpoint')
    work = tmp_path / 'work'

    written = kill_when_stalled(cmd, config, tmp_path / 'stalled')
    assert written == f'{work / "last_checkpoint"}.partial'  # epoch 2's path was half written
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')

    out = cmd.python(
        ['tools/train.py', config, '--resume', '--cfg-options', 'log_level=INFO'],
        env=PYTHONPATH,
        timeout=180,
    )
    assert re.search(r'Auto resumed from the latest checkpoint \S*epoch_1\.pth', out)
    assert 'resumed epoch: 1, iter: 2' in out
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_2.pth')
    assert torch.load(work / 'epoch_2.pth', map_location='cpu')['meta']['epoch'] == 2


def test_a_run_killed_while_saving_a_new_best_keeps_the_previous_best(
    make_imagefolder, tmp_path, cmd
):
    """save_best writes the new best checkpoint before it removes the previous one."""
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    config = stalled_run_config(data, tmp_path, stall_on='best')
    work = tmp_path / 'work'

    written = kill_when_stalled(cmd, config, tmp_path / 'stalled')
    assert written == f'{work / "best_accuracy_top1_epoch_2.pth"}.partial'
    previous = torch.load(work / 'best_accuracy_top1_epoch_1.pth', map_location='cpu')
    assert previous['meta']['epoch'] == 1
    assert 'state_dict' in previous and 'optimizer' not in previous  # a complete best checkpoint


def test_a_new_best_still_replaces_the_previous_one(make_imagefolder, tmp_path, cmd):
    """Without a crash, the previous best is removed once the new one is saved (one best file)."""
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    config = stalled_run_config(data, tmp_path, stall_on='best')
    (tmp_path / 'stalled').write_text('no stall: the marker exists already')
    cmd.python(['tools/train.py', config], env=PYTHONPATH, timeout=180)
    work = tmp_path / 'work'
    assert sorted(p.name for p in work.glob('best_*')) == ['best_accuracy_top1_epoch_2.pth']
    best = torch.load(work / 'best_accuracy_top1_epoch_2.pth', map_location='cpu')
    assert best['meta']['epoch'] == 2
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_2.pth')
    assert not list(work.glob('*.partial'))


def test_a_fixed_checkpoint_name_with_max_keep_ckpts_keeps_the_checkpoint_just_saved(
    make_imagefolder, tmp_path
):
    """The "outdated" checkpoint of a fixed filename_tmpl is the file just saved: kept."""
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    cfg = crd_config(data, tmp_path / 'work', max_epochs=2)
    cfg.default_hooks.checkpoint.update(filename_tmpl='latest.pth', max_keep_ckpts=1)
    cfg.experiment_name = 'fixed_name_keep_1'
    Runner.from_cfg(cfg).train()
    assert torch.load(tmp_path / 'work' / 'latest.pth', map_location='cpu')['meta']['epoch'] == 2


# what mmengine's own code (crd_mm's patch undone) leaves after the kill of the tests above
UNPATCHED = {
    'last_checkpoint': 'last',
    'best': 'best',
}


@pytest.mark.slow
@pytest.mark.parametrize('stall_on', list(UNPATCHED))
def test_the_kill_test_catches_an_in_place_last_checkpoint_or_best_removed_first(
    make_imagefolder, tmp_path, cmd, stall_on
):
    """Control: with mmengine's own last_checkpoint write / save_best the same kill loses them."""
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    config = stalled_run_config(data, tmp_path, undo=(UNPATCHED[stall_on],), stall_on=stall_on)
    work = tmp_path / 'work'
    written = kill_when_stalled(cmd, config, tmp_path / 'stalled')
    if stall_on == 'last_checkpoint':
        assert written == str(work / 'last_checkpoint')  # in place
        content = (work / 'last_checkpoint').read_text()
        assert content != str(work / 'epoch_1.pth') and str(work / 'epoch_2.pth').startswith(
            content
        )  # half a path: --resume would fail
    else:
        assert written == f'{work / "best_accuracy_top1_epoch_2.pth"}.partial'
        assert not (work / 'best_accuracy_top1_epoch_1.pth').exists()


SAVE_SCRIPT = """
import sys, torch
import crd_mm  # noqa: F401
from mmengine.runner import runner
# what Runner.save_checkpoint calls
runner.save_checkpoint({'weights': torch.zeros(10)}, sys.argv[1])
"""


def strace_works():
    if shutil.which('strace') is None:
        return False
    return (
        subprocess.run(
            ['strace', '-f', '--seccomp-bpf', '-o', os.devnull, 'true'], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.skipif(
    not strace_works(), reason='needs strace >= 5.3 (with ptrace allowed) to observe fsync calls'
)
def test_checkpoint_and_directory_are_fsynced_around_the_rename(tmp_path, cmd):
    """The system calls of one save: write + fsync the partial file, rename it, fsync the
    directory."""
    work = tmp_path / 'work'
    target = work / 'epoch_1.pth'
    trace = tmp_path / 'trace'
    syscalls = 'trace=openat,write,fsync,fdatasync,rename,renameat,renameat2,close'
    cmd.run(
        [
            'strace',
            '-f',
            '-qq',
            '--seccomp-bpf',
            '-o',
            trace,
            '-e',
            syscalls,
            sys.executable,
            '-c',
            SAVE_SCRIPT,
            target,
        ]
    )
    with open(trace) as f:
        calls = [re.sub(r'^\d+\s+', '', line.strip()) for line in f]

    def position(pattern, start=0):
        for i in range(start, len(calls)):
            match = re.match(pattern, calls[i])
            if match:
                return i, match
        pytest.fail(
            f'no system call matching {pattern!r} after call {start}:\n' + '\n'.join(calls[-40:])
        )

    opened, match = position(
        rf'openat\(AT_FDCWD, "{re.escape(str(target))}\.partial", O_WRONLY.* = (\d+)$'
    )
    fd = match.group(1)
    written, _ = position(rf'write\({fd}, ', opened)
    synced, _ = position(rf'f(data)?sync\({fd}\)', written)
    renamed, _ = position(
        rf'rename(at2?)?\(.*"{re.escape(str(target))}\.partial", .*"{re.escape(str(target))}"',
        synced,
    )
    dir_opened, match = position(
        rf'openat\(AT_FDCWD, "{re.escape(str(work))}", O_RDONLY.* = (\d+)$', renamed
    )
    position(rf'f(data)?sync\({match.group(1)}\)', dir_opened)
    assert not any(
        str(target) in call and 'O_TRUNC' in call for call in calls if '.partial' not in call
    )
