"""Two real processes (torch.distributed, gloo): CRD banks stay bit-identical on both ranks."""

import os.path as osp

import torch
from tiny_configs import crd_config

TESTS_DIR = osp.dirname(osp.abspath(__file__))


def test_banks_are_identical_on_both_ranks_and_updated_for_the_union(
    make_imagefolder, tmp_path, cmd, free_port
):
    # 9 samples on 2 ranks: mmengine's sampler pads to 10 by repeating one sample (in another
    # iteration; duplicates inside one gathered batch are covered by the next test)
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    cfg = crd_config(
        data,
        tmp_path / 'work',
        max_epochs=1,
        batch_size=2,
        hooks=[dict(type='CRDMemoryBankHook'), dict(type='BankProbeHook', out_dir=str(tmp_path))],
        extra_imports=('bank_probe',),
    )
    cfg.dump(tmp_path / 'crd_dist.py')
    cmd.python(
        [
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={free_port}',
            'tools/train.py',
            str(tmp_path / 'crd_dist.py'),
            '--launcher',
            'pytorch',
        ],
        env={'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])},
        timeout=240,
    )

    ranks = [torch.load(tmp_path / f'probe_rank{r}.pth', weights_only=False) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    all_indices = []
    for rec0, rec1 in zip(*ranks):
        union = sorted(set(rec0['indices']) | set(rec1['indices']))
        all_indices += rec0['indices'] + rec1['indices']
        for name, (student, teacher) in rec0['after'].items():
            assert torch.equal(student, rec1['after'][name][0])
            assert torch.equal(teacher, rec1['after'][name][1])
            assert torch.equal(rec0['normalizers'][name], rec1['normalizers'][name])
            before_s, before_t = rec0['before'][name]
            assert (student != before_s).any(1).nonzero().flatten().tolist() == union
            assert (teacher != before_t).any(1).nonzero().flatten().tolist() == union
    assert len(all_indices) == 10 and sorted(set(all_indices)) == list(
        range(9)
    )  # one padded repeat


def _momentum_update(row, embedding, momentum):
    """CRD's bank update, written out here independently of the bank's code."""
    mixed = row * momentum + embedding * (1 - momentum)
    return mixed / mixed.norm(dim=1, keepdim=True)


def test_duplicates_across_and_within_ranks_use_first_occurrence_banks_agree_diff_rank_seed(
    make_imagefolder, tmp_path, cmd, free_port
):
    """One gathered batch holds index 3 twice on rank 0 and once on rank 1, and 5 on both ranks.

    ``diff_rank_seed=True`` gives each rank its own seed (and, through
    AddPixelNoise, different embeddings for the same index): the banks must
    still start and stay bit-identical, the negatives must still differ, and
    every written row must be the momentum update from the first occurrence in
    rank order. Then the 2-process checkpoint is resumed on 1 process.
    """
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    per_rank = [[3, 5, 3, 1, 6, 7, 8, 4], [5, 2, 3, 0, 0, 1, 2, 6]]
    cfg = crd_config(
        data,
        tmp_path / 'work',
        max_epochs=1,
        batch_size=4,
        hooks=[
            dict(type='CRDMemoryBankHook'),
            dict(type='EmbeddingProbeHook', out_dir=str(tmp_path)),
        ],
        extra_imports=('rank_probe',),
    )
    cfg.train_dataloader.sampler = dict(type='FixedOrderSampler', per_rank=per_rank)
    cfg.train_dataloader.dataset.pipeline.insert(1, dict(type='AddPixelNoise'))
    cfg.randomness = dict(seed=7, diff_rank_seed=True)
    cfg.dump(tmp_path / 'crd_dup.py')
    env = {'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])}
    cmd.python(
        [
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={free_port}',
            'tools/train.py',
            str(tmp_path / 'crd_dup.py'),
            '--launcher',
            'pytorch',
        ],
        env=env,
        timeout=240,
    )

    probes = [torch.load(tmp_path / f'probe_rank{r}.pth', weights_only=False) for r in (0, 1)]
    name = 'distiller.distill_losses.loss_crd'
    for key in ('student', 'teacher'):
        assert torch.equal(probes[0]['initial'][name][key], probes[1]['initial'][name][key])
    records = [p['records'] for p in probes]
    assert len(records[0]) == len(records[1]) == 2
    for it, (rec0, rec1) in enumerate(zip(*records)):
        assert (
            rec0['indices'] == per_rank[0][4 * it : 4 * it + 4]
            and rec1['indices'] == per_rank[1][4 * it : 4 * it + 4]
        )
        assert not torch.equal(
            rec0['sampler_states'][name], rec1['sampler_states'][name]
        )  # negatives differ
        for key in ('student', 'teacher', 'written', 'normalizers'):
            assert torch.equal(rec0['after'][name][key], rec1['after'][name][key]), (it, key)
        gathered = rec0['indices'] + rec1['indices']
        for key, connector in (('student', 'crd_s'), ('teacher', 'crd_t')):
            embeddings = torch.cat([rec0['embeddings'][connector], rec1['embeddings'][connector]])
            before, after = rec0['before'][name][key], rec0['after'][name][key]
            for index in set(gathered):
                positions = [p for p, i in enumerate(gathered) if i == index]
                expected = _momentum_update(
                    before[index : index + 1], embeddings[positions[0] : positions[0] + 1], 0.5
                )
                torch.testing.assert_close(after[index : index + 1], expected, rtol=0, atol=1e-6)
                for later in positions[1:]:  # the test can tell the occurrences apart
                    other = _momentum_update(
                        before[index : index + 1], embeddings[later : later + 1], 0.5
                    )
                    assert (other - expected).abs().max() > 1e-4
            untouched = sorted(set(range(9)) - set(gathered))
            assert torch.equal(after[untouched], before[untouched])
    assert {3, 5} <= {i for i in records[0][0]['indices'] if i in records[1][0]['indices']}

    # resume the 2-process checkpoint on 1 process: banks, Z and coverage restored, with a warning
    cfg.custom_hooks[1]['tag'] = 'resumed'
    cfg.dump(tmp_path / 'crd_dup_resume.py')
    out = cmd.python(
        [
            'tools/train.py',
            str(tmp_path / 'crd_dup_resume.py'),
            '--resume',
            str(tmp_path / 'work' / 'epoch_1.pth'),
            '--cfg-options',
            'train_cfg.max_epochs=2',
        ],
        env=env,
        timeout=240,
    )
    assert 'resuming on 1 process(es) a run checkpointed on 2' in out
    resumed = torch.load(tmp_path / 'resumed_rank0.pth', weights_only=False)['initial'][name]
    final = records[0][-1]['after'][name]
    for key in ('student', 'teacher', 'written', 'normalizers'):
        assert torch.equal(resumed[key], final[key]), key
