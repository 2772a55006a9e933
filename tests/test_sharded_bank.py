"""Sharded memory banks: real gloo processes via tools/train.py.

Compared with replicated banks of the same run.
"""

import glob
import os.path as osp
import shutil

import pytest
import torch
from test_queue_memory import check_fifo_across_ranks
from tiny_configs import crd_config

from crd_mm.memory import ContrastMemoryBank, ShardedMemoryBank
from crd_mm.memory.bank import initial_rows

TESTS_DIR = osp.dirname(osp.abspath(__file__))
BANK = 'distiller.distill_losses.loss_crd'
QUEUE = 'distiller.distill_losses.loss_crdq'


def sharding_config(data, work_dir, probe_dir, shard, max_epochs=1, loss_cfg=None):
    hooks = [
        dict(type='CRDMemoryBankHook', shard_banks=shard),
        dict(type='MemoryProbeHook', out_dir=str(probe_dir)),
    ]
    return crd_config(
        data,
        work_dir,
        max_epochs=max_epochs,
        batch_size=2,
        loss_cfg=loss_cfg,
        hooks=hooks,
        extra_imports=('memory_probe',),
    )


def train(cmd, cfg, path, nproc, port, resume=None):
    cfg.dump(path)
    args = [
        '-m',
        'torch.distributed.run',
        f'--nproc_per_node={nproc}',
        f'--master_port={port}',
        'tools/train.py',
        str(path),
        '--launcher',
        'pytorch',
    ]
    if resume:
        args += ['--resume', str(resume)]
    cmd.python(
        args, env={'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])}, timeout=300
    )
    return [
        torch.load(osp.join(osp.dirname(path), f'memory_probe_rank{r}.pth'), weights_only=False)
        for r in range(nproc)
    ]


def saved_banks(work_dir, checkpoint):
    """A checkpoint's whole bank: inline (replicated) or read from its per-rank slice files."""
    entry = torch.load(osp.join(work_dir, checkpoint), map_location='cpu')['crd_memory_banks'][BANK]
    if 'per_rank_files' not in entry:
        return entry
    files = glob.glob(osp.join(work_dir, entry['per_rank_files'], 'rank*-of*.pth'))
    parts = sorted((torch.load(f, map_location='cpu') for f in files), key=lambda p: p['start'])
    return {key: torch.cat([p[key] for p in parts]) for key in ('student', 'teacher', 'written')}


def union(shards):
    """The whole bank from every rank's shard snapshot (by first row), checking they tile it."""
    shards = sorted(shards, key=lambda s: s['start'])
    starts = [s['start'] for s in shards]
    assert starts == sorted(set(starts)) and starts[0] == 0
    return {key: torch.cat([s[key] for s in shards]) for key in ('student', 'teacher', 'written')}


def assert_same_banks(sharded_ranks, replicated_ranks, num_samples, exact_iters=1):
    """After every iteration: union of shards == the replicated bank; same Z and losses.

    The replicated bank is identical on its ranks.
    """
    assert len(sharded_ranks[0]) == len(replicated_ranks[0]) > 0
    for step, records in enumerate(zip(*sharded_ranks, *replicated_ranks)):
        world = len(sharded_ranks)
        shard_recs, repl_recs = records[:world], records[world:]
        for when in ('before', 'after'):
            shards = [rec[when][BANK] for rec in shard_recs]
            assert all(s['kind'] == 'ShardedMemoryBank' for s in shards)
            assert sum(s['student'].shape[0] for s in shards) == num_samples
            assert max(s['student'].shape[0] for s in shards) <= -(-num_samples // world)
            whole = union(shards)
            reference = repl_recs[0][when][BANK]
            for rec in repl_recs[1:]:
                assert torch.equal(rec[when][BANK]['student'], reference['student'])
            for key in ('student', 'teacher'):
                if step < exact_iters:
                    assert torch.equal(whole[key], reference[key]), (step, when, key)
                else:
                    torch.testing.assert_close(whole[key], reference[key], rtol=1e-5, atol=1e-6)
            assert torch.equal(whole['written'], reference['written'])
            for shard in shards:
                z, z_ref = shard['normalizers'], reference['normalizers']
                assert (z is None) == (z_ref is None)
                if z is not None:
                    torch.testing.assert_close(z, z_ref, rtol=1e-6, atol=0)
        for shard_rec, repl_rec in zip(shard_recs, repl_recs):
            assert shard_rec['indices'] == repl_rec['indices']
            for key, value in repl_rec['losses'].items():
                assert shard_rec['losses'][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (
                    step,
                    key,
                )


def test_initial_rows_of_any_slice_are_the_whole_bank_rows():
    for num in (9, 33, 1000):
        whole = initial_rows(num, 8, stream=5)
        for start, stop in ((0, num), (3, 4), (num // 3, 2 * num // 3), (num - 1, num)):
            assert torch.equal(initial_rows(num, 8, 5, start=start, stop=stop), whole[start:stop])
    assert torch.equal(ContrastMemoryBank(33, 8, 0.5, seed=2).student, initial_rows(33, 8, 4))


def test_a_single_process_sharded_bank_is_the_replicated_bank():
    labels = torch.arange(40) % 4
    sharded, replicated = (
        cls(40, 8, 0.5, labels=labels, seed=1) for cls in (ShardedMemoryBank, ContrastMemoryBank)
    )
    assert torch.equal(sharded.student, replicated.student) and (sharded.start, sharded.stop) == (
        0,
        40,
    )
    idx = torch.tensor([3, 17, 3, 29])
    for bank in (sharded, replicated):
        bank.reseed(7)
    pos, neg = (
        sharded.positives(idx, 'exact'),
        sharded.negatives(idx, 6, 'class_exact', shared=False),
    )
    # a sharded bank's class draws are keys N + position in the class-sorted order, which
    # their owner (here the one rank) resolves to the replicated bank's samples
    expected = replicated.negatives(idx, 6, 'class_exact', shared=False)
    assert torch.equal(neg, 40 + replicated.order.argsort()[expected])
    assert torch.equal(sharded.local_rows(neg), expected)
    student, teacher, (pos_l, neg_l) = sharded.contrast_rows(pos, neg)
    assert torch.equal(teacher[neg_l], replicated.teacher[expected]) and torch.equal(
        student[pos_l], replicated.student[pos]
    )
    assert student.shape[0] == torch.unique(torch.cat([pos, neg.flatten()])).numel()
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    for bank in (sharded, replicated):
        bank.stage(idx, emb, -emb)
    assert sharded.apply_staged() == pytest.approx(replicated.apply_staged())
    assert torch.equal(sharded.teacher, replicated.teacher) and torch.equal(
        sharded.written, replicated.written
    )


def test_two_shards_apply_every_ranks_update_beside_one_queue(
    make_imagefolder, tmp_path, cmd, free_port
):
    """One 2-process run: a sharded bank and a queue loss.

    The sharded bank applies CRD's update of the union, checked row by row.
    """
    data = make_imagefolder(
        tmp_path / 'data', num_classes=3, per_class=3
    )  # 9 samples: shards of 4 and 5
    cfg = sharding_config(data, tmp_path / 'work', tmp_path, shard=True)
    distiller = cfg.model.distiller
    distiller.distill_losses['loss_crdq'] = dict(
        type='CRDLoss', loss_weight=0.8, feat_dim=16, memory='queue', queue_size=5
    )
    distiller.loss_forward_mappings['loss_crdq'] = distiller.loss_forward_mappings['loss_crd']
    ranks = train(cmd, cfg, tmp_path / 'cfg.py', 2, free_port)
    assert [len(r) for r in ranks] == [3, 3]
    written = set()
    for records in zip(*ranks):
        before = union([rec['before'][BANK] for rec in records])
        after = union([rec['after'][BANK] for rec in records])
        assert [rec['after'][BANK]['student'].shape[0] for rec in records] == [4, 5]
        expected = {key: before[key].clone() for key in ('student', 'teacher')}
        seen = set()
        for rec in records:  # rank order; a repeated index counts once, at its first occurrence
            for idx, emb_s, emb_t in rec['staged'][BANK]:
                for i, s, t in zip(idx.tolist(), emb_s, emb_t):
                    if i not in seen:
                        seen.add(i)
                        for key, new in (('student', s), ('teacher', t)):
                            mixed = 0.5 * before[key][i] + 0.5 * new
                            expected[key][i] = mixed / mixed.norm()
        written |= seen
        for key in ('student', 'teacher'):
            torch.testing.assert_close(after[key], expected[key], rtol=1e-6, atol=1e-6)
            untouched = [i for i in range(9) if i not in seen]
            assert torch.equal(after[key][untouched], before[key][untouched])
        assert after['written'].nonzero().flatten().tolist() == sorted(written)
        assert torch.equal(
            records[0]['after'][BANK]['normalizers'], records[1]['after'][BANK]['normalizers']
        )
    assert written == set(range(9))
    check_fifo_across_ranks(ranks, 5, name=QUEUE)


@pytest.mark.slow
def test_two_shards_equal_the_replicated_banks_every_iteration(
    make_imagefolder, tmp_path, cmd, free_port
):
    # 9 samples on 2 ranks: shards of 4 and 5 rows; the sampler pads to 10 with one repeat
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    runs = {}
    for shard in (True, False):
        out = tmp_path / ('sharded' if shard else 'replicated')
        out.mkdir()
        runs[shard] = train(
            cmd,
            sharding_config(data, out / 'work', out, shard),
            out / 'cfg.py',
            2,
            free_port + shard,
        )
    assert [len(r) for r in runs[True]] == [3, 3]
    assert_same_banks(runs[True], runs[False], num_samples=9)
    # the sharded checkpoint's slice files hold the whole banks, equal to the replicated run's
    saved = [
        saved_banks(tmp_path / name / 'work', 'epoch_1.pth') for name in ('sharded', 'replicated')
    ]
    assert saved[0]['student'].shape == (9, 16) and torch.equal(
        saved[0]['written'], saved[1]['written']
    )
    torch.testing.assert_close(saved[0]['teacher'], saved[1]['teacher'], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resume_two_shards_into_three_processes_equals_the_replicated_run(
    make_imagefolder, tmp_path, cmd, free_port
):
    """2 processes for epoch 1, then a resume on 3 processes for epoch 2.

    Sharded == replicated throughout.
    """
    data = make_imagefolder(
        tmp_path / 'data', num_classes=3, per_class=4
    )  # 12 samples: shards 6/6, then 4/4/4
    loss_cfg = dict(negative_sampling='uniform', share_negatives=True, num_negatives=5)
    phases = {}
    for shard in (True, False):
        out = tmp_path / ('sharded' if shard else 'replicated')
        first, second = out / 'first', out / 'second'
        first.mkdir(parents=True)
        second.mkdir()
        ports = free_port + 2 * shard
        one = train(
            cmd,
            sharding_config(data, first / 'work', first, shard, max_epochs=1, loss_cfg=loss_cfg),
            first / 'cfg.py',
            2,
            ports,
        )
        shutil.copytree(first / 'work', second / 'work')
        two = train(
            cmd,
            sharding_config(data, second / 'work', second, shard, max_epochs=2, loss_cfg=loss_cfg),
            second / 'cfg.py',
            3,
            ports + 1,
            resume=second / 'work' / 'epoch_1.pth',
        )
        phases[shard] = (one, two)
    assert_same_banks(phases[True][0], phases[False][0], num_samples=12)
    assert_same_banks(phases[True][1], phases[False][1], num_samples=12, exact_iters=0)
    # the 3 resumed shards start from exactly the banks the 2-shard run checkpointed
    saved = saved_banks(tmp_path / 'sharded' / 'first' / 'work', 'epoch_1.pth')
    resumed = union([rank[0]['before'][BANK] for rank in phases[True][1]])
    assert [rank[0]['before'][BANK]['student'].shape[0] for rank in phases[True][1]] == [4, 4, 4]
    for key in ('student', 'teacher', 'written'):
        assert torch.equal(resumed[key], saved[key])
    assert phases[True][1][0][0]['iter'] == 3  # epoch 1: 6 samples per rank in batches of 2
