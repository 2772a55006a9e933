"""Sharded banks' checkpoints: every rank writes its own rows, no process holds a whole bank.

Real gloo processes through tools/train.py; the banks a resumed run starts from are compared
with an uninterrupted run's banks at the same iteration, bit for bit.
"""

import glob
import os
import os.path as osp
import shutil

import memory_probe  # noqa: F401  (registers MemoryProbeHook in this process)
import pytest
import torch
from mmengine.runner import Runner
from test_sharded_bank import union
from tiny_configs import crd_config, image_folder_loader

TESTS_DIR = osp.dirname(osp.abspath(__file__))
BANK = 'distiller.distill_losses.loss_crd'
LOSS = dict(negative_sampling='uniform', share_negatives=True, num_negatives=5)
CHUNK_ROWS = 2  # rows read at once from a slice file: several chunks per slice of 4 to 6 rows


def sharded_config(data, work_dir, probe_dir, shard=True, max_epochs=1, checkpoint=None):
    """CRD on 12 samples with shard_banks, probes recording banks and the largest tensors."""
    hooks = [
        dict(type='CRDMemoryBankHook', shard_banks=shard),
        dict(type='MemoryProbeHook', out_dir=str(probe_dir)),
        dict(type='PeakTensorHook', out_dir=str(probe_dir), chunk_rows=CHUNK_ROWS),
    ]
    cfg = crd_config(
        data,
        work_dir,
        max_epochs=max_epochs,
        batch_size=2,
        loss_cfg=LOSS,
        hooks=hooks,
        extra_imports=('memory_probe', 'slice_probe'),
    )
    if checkpoint:
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', **checkpoint)
    return cfg


def launch(cmd, cfg, out, nproc, port, resume=None):
    """Train on ``nproc`` gloo processes; every rank's bank records and peak tensor sizes."""
    path = out / 'cfg.py'
    cfg.dump(path)
    args = ['-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', f'--master_port={port}']
    args += ['tools/train.py', str(path), '--launcher', 'pytorch']
    if resume:
        args += ['--resume', str(resume)]
    env = {'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])}
    cmd.python(args, env=env, timeout=300)
    records = [torch.load(out / f'memory_probe_rank{r}.pth') for r in range(nproc)]
    peaks = [torch.load(out / f'peak_rank{r}.pth') for r in range(nproc)]
    return records, peaks


def banks_at(records, step):
    """The whole bank (union of the ranks' shards) after ``step`` training iterations."""
    for rank_records in zip(*records):
        if rank_records[0]['iter'] == step:
            return union([rec['before'][BANK] for rec in rank_records])
    last = [rec[-1] for rec in records]
    assert last[0]['iter'] + 1 == step, (last[0]['iter'], step)
    return union([rec['after'][BANK] for rec in last])


def slice_files(work_dir, checkpoint):
    """The per-rank files the checkpoint's bank entry names, loaded, and the entry itself."""
    entry = torch.load(work_dir / checkpoint, map_location='cpu')['crd_memory_banks'][BANK]
    folder = work_dir / entry['per_rank_files']
    files = sorted(glob.glob(str(folder / 'rank*-of*.pth')))
    return [torch.load(f, map_location='cpu') for f in files], entry


def assert_slices_equal(parts, expected, num_samples):
    """Slice files tile the bank, hold at most ceil(N / W) rows each and equal ``expected``."""
    world = len(parts)
    assert all(p['world_size'] == world for p in parts)
    assert max(p['student'].shape[0] for p in parts) <= -(-num_samples // world)
    whole = {key: torch.cat([p[key] for p in parts]) for key in ('student', 'teacher', 'written')}
    assert [p['start'] for p in parts] == sorted(p['start'] for p in parts)
    for key in ('student', 'teacher', 'written'):
        assert torch.equal(whole[key], expected[key]), key


def check_slice_files(work_dir, checkpoint, records, world, step):
    """The checkpoint holds no bank rows; its W slice files hold the run's banks at ``step``."""
    parts, entry = slice_files(work_dir, checkpoint)
    assert not any(isinstance(v, torch.Tensor) for v in entry.values())
    assert len(parts) == world
    assert_slices_equal(parts, banks_at(records, step), num_samples=12)


def assert_bounded(peaks, what):
    for rank, peak in enumerate(peaks):
        bound = peak['slice_bytes'] + peak['chunk_bytes']
        assert 0 < peak['peaks'][what] <= bound, (rank, what, peak)


@pytest.mark.slow
def test_resume_two_to_three_and_three_to_two_processes_is_bit_exact(
    make_imagefolder, tmp_path, cmd, free_port
):
    """2 processes for epochs 1-2; resumed from epoch 1 on 3 processes; then from its epoch 2 on 2.

    Each resumed run starts from exactly the banks its uninterrupted source run had at the
    checkpoint's iteration; no rank holds more than its slice plus one chunk on save or resume,
    and no file holds a whole bank.
    """
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)  # 12: 6/6 and 4/4/4
    runs = {}
    for name in ('two', 'three', 'back'):
        (tmp_path / name).mkdir()
    two, three, back = (tmp_path / name for name in ('two', 'three', 'back'))
    runs['two'] = launch(
        cmd, sharded_config(data, two / 'work', two, max_epochs=2), two, 2, free_port
    )
    assert_bounded(runs['two'][1], 'save')
    check_slice_files(two / 'work', 'epoch_2.pth', runs['two'][0], world=2, step=6)
    shutil.copytree(two / 'work', three / 'work')  # resolved beside the resumed checkpoint
    shutil.rmtree(two / 'work' / 'crd_memory')  # ... not where it was saved
    runs['three'] = launch(
        cmd,
        sharded_config(data, three / 'work', three, max_epochs=3),
        three,
        3,
        free_port + 1,
        resume=three / 'work' / 'epoch_1.pth',
    )
    shutil.copytree(three / 'work', back / 'work')
    runs['back'] = launch(
        cmd,
        sharded_config(data, back / 'work', back, max_epochs=3),
        back,
        2,
        free_port + 2,
        resume=back / 'work' / 'epoch_2.pth',
    )
    # epoch 1 of the 2-process run: 3 iterations; epoch 2 on 3 processes: 2 more
    for source, resumed, step in (('two', 'three', 3), ('three', 'back', 5)):
        records = runs[resumed][0]
        assert records[0][0]['iter'] == step
        start = union([rank[0]['before'][BANK] for rank in records])
        reference = banks_at(runs[source][0], step)
        for key in ('student', 'teacher', 'written'):
            assert torch.equal(start[key], reference[key]), (source, resumed, key)
        z = [rank[0]['before'][BANK]['normalizers'] for rank in records]
        z_ref = runs[source][0][0][-1]['after'][BANK]['normalizers']
        assert all(torch.equal(zr, z_ref) for zr in z)
    # every rank of every run: at most its slice plus one chunk, saving and resuming
    for name, (_, peaks) in runs.items():
        assert_bounded(peaks, 'save')
        if name != 'two':
            assert_bounded(peaks, 'resume')
    for name, world, step in (('three', 3, 7), ('back', 2, 8)):
        check_slice_files(tmp_path / name / 'work', 'epoch_3.pth', runs[name][0], world, step)
    for name, (_, peaks) in runs.items():  # measured, for the docs
        print(name, [(p['peaks'], p['slice_bytes'], p['chunk_bytes']) for p in peaks])


def test_replicated_and_sharded_checkpoints_resume_into_each_other(imagefolder, tmp_path):
    """Replicated epoch 1 -> sharded epoch 2 -> replicated epoch 3, each resuming exactly.

    The replicated checkpoint keeps its rows inline (a sharded bank slices them), the sharded
    one a slice folder (a replicated bank reads every slice).
    """
    work = tmp_path / 'work'
    last = None
    for epoch, shard in ((1, False), (2, True), (3, False)):
        probe_dir = tmp_path / f'epoch{epoch}'
        probe_dir.mkdir()
        cfg = crd_config(
            imagefolder,
            work,
            max_epochs=epoch,
            batch_size=4,
            loss_cfg=LOSS,
            hooks=[
                dict(type='CRDMemoryBankHook', shard_banks=shard),
                dict(type='MemoryProbeHook', out_dir=str(probe_dir)),
            ],
        )
        if epoch > 1:
            cfg.resume, cfg.load_from = True, str(work / f'epoch_{epoch - 1}.pth')
        Runner.from_cfg(cfg).train()
        records = torch.load(probe_dir / 'memory_probe_rank0.pth')
        kinds = {rec['before'][BANK]['kind'] for rec in records}
        assert kinds == {'ShardedMemoryBank' if shard else 'ContrastMemoryBank'}
        if last is not None:  # restored exactly: the previous run's banks after its last step
            for key in ('student', 'teacher', 'written', 'normalizers'):
                assert torch.equal(records[0]['before'][BANK][key], last[key]), (epoch, key)
        last = records[-1]['after'][BANK]
        entry = torch.load(work / f'epoch_{epoch}.pth', map_location='cpu')['crd_memory_banks']
        assert ('per_rank_files' in entry[BANK]) == shard
        assert ('student' in entry[BANK]) == (not shard)


def with_validation(cfg, data, probe_dir):
    """Validation every ``val_interval`` with ProgressMetric (scores 1, 3, 2, 4, ...)."""
    cfg.val_dataloader = image_folder_loader(data, batch_size=2, shuffle=False)
    cfg.val_evaluator = dict(type='ProgressMetric')
    cfg.val_cfg = dict()
    cfg.custom_hooks.append(dict(type='SliceStoreProbeHook', out_dir=str(probe_dir)))
    return cfg


CHECKPOINT_OPTIONS = dict(
    # 3 iterations per epoch; val at iterations 2, 4, 6, 8 scores 1, 3, 2, 4: best at 2, 4, 8
    # (the val at 6 writes slices that no checkpoint keeps); step saves at 3, 5, 7 (save_begin,
    # interval) and 8 (save_last), plus 4 (the best's step save); two kept
    by_iteration=(
        dict(by_epoch=False, interval=2, save_begin=3, max_keep_ckpts=2, save_last=True),
        dict(type='IterBasedTrainLoop', max_iters=8, val_interval=2),
        {'iter_7.pth', 'iter_8.pth', 'best_progress_iter_8.pth'},
    ),
    # val after epochs 1, 2, 3 scores 1, 3, 2: best after 1 then 2; step saves from epoch 2
    # (save_begin) every epoch, one kept
    by_epoch=(
        dict(by_epoch=True, interval=1, save_begin=2, max_keep_ckpts=1, save_last=True),
        dict(by_epoch=True, max_epochs=3, val_interval=1),
        {'epoch_3.pth', 'best_progress_epoch_2.pth'},
    ),
)


@pytest.mark.parametrize(
    'option', [pytest.param('by_epoch'), pytest.param('by_iteration', marks=pytest.mark.slow)]
)
def test_slice_folders_follow_checkpoint_hook_on_every_rank(
    option, make_imagefolder, tmp_path, cmd, free_port
):
    """Per-rank slice writes stay in step with CheckpointHook's saves and removals.

    interval (by iteration and by epoch), save_begin, save_last, save_best (replaced) and
    max_keep_ckpts: before every iteration and at the end, the slice folders are exactly those
    the checkpoints on disk refer to, and each remaining checkpoint's slices equal the banks
    at its iteration.
    """
    checkpoint, train_cfg, expected = CHECKPOINT_OPTIONS[option]
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    checkpoint = dict(checkpoint, save_best='progress', rule='greater')
    cfg = sharded_config(data, tmp_path / 'work', tmp_path, checkpoint=checkpoint)
    cfg.train_cfg = train_cfg
    records, _ = launch(cmd, with_validation(cfg, data, tmp_path), tmp_path, 2, free_port)
    store = torch.load(tmp_path / 'store_probe.pth')
    assert set(store[-1]['checkpoints']) == expected
    for record in store:
        referenced = set().union(*record['refers'].values()) if record['refers'] else set()
        assert set(record['folders']) == referenced, record
    for name in expected:
        step = torch.load(tmp_path / 'work' / name, map_location='cpu')['meta']['iter']
        parts, entry = slice_files(tmp_path / 'work', name)
        assert entry['iter'] == step and len(parts) == 2
        assert_slices_equal(parts, banks_at(records, step), num_samples=12)


def one_process_sharded_config(data, work_dir, max_epochs):
    return crd_config(
        data,
        work_dir,
        max_epochs=max_epochs,
        batch_size=4,
        loss_cfg=LOSS,
        hooks=[dict(type='CRDMemoryBankHook', shard_banks=True)],
    )


def test_a_save_cut_short_is_cleaned_up_and_a_missing_slice_file_is_named(imagefolder, tmp_path):
    """Slice files of a save that never reached its checkpoint go; a lost file stops the resume.

    A folder of slices written before a crash (no checkpoint refers to it, a ``.partial`` file
    inside) is removed once the resumed run has saved; a checkpoint whose slice file is gone
    is refused with the folder and the fix named.
    """
    work = tmp_path / 'work'
    Runner.from_cfg(one_process_sharded_config(imagefolder, work, max_epochs=1)).train()
    entry = torch.load(work / 'epoch_1.pth', map_location='cpu')['crd_memory_banks'][BANK]
    kept = entry['per_rank_files'].split('/')[1]
    leftover = work / 'crd_memory' / 'iter_9_0badf00d' / BANK
    leftover.mkdir(parents=True)
    (leftover / 'rank0-of1.pth.partial').write_bytes(b'half a slice')

    broken = tmp_path / 'broken'
    shutil.copytree(work, broken)
    os.remove(broken / entry['per_rank_files'] / 'rank0-of1.pth')
    cfg = one_process_sharded_config(imagefolder, broken, max_epochs=2)
    cfg.resume, cfg.load_from = True, str(broken / 'epoch_1.pth')
    with pytest.raises(FileNotFoundError, match='rank0-of1.pth.*Keep the crd_memory/ folder'):
        Runner.from_cfg(cfg).train()

    cfg = one_process_sharded_config(imagefolder, work, max_epochs=2)
    cfg.resume, cfg.load_from = True, str(work / 'epoch_1.pth')
    Runner.from_cfg(cfg).train()
    folders = set(os.listdir(work / 'crd_memory'))
    assert kept in folders and 'iter_9_0badf00d' not in folders and len(folders) == 2
