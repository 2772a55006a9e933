"""Anchor sending: sharded banks score per-sample negatives where the rows live.

Real gloo process groups on the CPU (2 and 3 processes) run crd_mm's ``CRDLoss`` on a
``ShardedMemoryBank`` (default scoring) and on a replicated ``ContrastMemoryBank`` of the
same seed, side by side, for several iterations: losses, gradients with respect to both
anchors, Z and banks must agree after every iteration, and the bytes each rank hands to
the collectives must be those of the anchor exchange (row fetching sends other amounts).
A Runner run (tools/train.py, DDP) compares a sharded and a replicated training run.
"""

import os.path as osp
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement
from test_sharded_bank import assert_same_banks, sharding_config, train

from crd_mm.memory import ContrastMemoryBank, CRDMemoryBankHook, ShardedMemoryBank
from crd_mm.memory import anchor_scores as anchor_scores_module

NUM_SAMPLES, FEAT_DIM, NUM_NEGATIVES, ITERATIONS = 203, 32, 40, 4
# bytes: whether the whole step's collectives are checked against the anchor protocol (class
# draws may add the sampler's own exchanges, which are not the scoring's)
CASES = {
    'w2-class_exact-relax-float64': dict(
        world=2, sampling='class_exact', positive='relax', bank='float64', anchor='float64'
    ),
    'w3-uniform-float64': dict(
        world=3, sampling='uniform', positive='exact', bank='float64', anchor='float64', bytes=True
    ),
    # float16 rows converted in chunks of 2 entries per anchor (forced small): float32 scores
    'w2-uniform-float16': dict(
        world=2,
        sampling='uniform',
        positive='exact',
        bank='float16',
        anchor='float32',
        chunk=2,
        bytes=True,
    ),
}


def _batch(rank, iteration, dtype):
    """Rank r's batch at an iteration: 3 + r samples (ranks differ), unit anchors."""
    generator = torch.Generator().manual_seed(1000 * iteration + rank)
    batch = 3 + rank
    idx = torch.randint(0, NUM_SAMPLES, (batch,), generator=generator)
    anchors = [
        F.normalize(torch.randn(batch, FEAT_DIM, generator=generator, dtype=dtype), dim=1)
        for _ in range(2)
    ]
    return idx, anchors


def _worker(rank, world, port, out_dir, case):
    import torch.distributed as torch_dist
    from mmengine import dist

    from crd_mm.models.losses import CRCDLoss, CRDLoss

    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    if 'chunk' in case:
        row_bytes = FEAT_DIM * 4
        anchor_scores_module.SAMPLE_CHUNK_BYTES = case['chunk'] * row_bytes
    sent = {'bytes': 0, 'on': False}

    def counted(name):
        original = getattr(dist, name)

        def call(data, *args, **kwargs):
            if sent['on']:
                sent['bytes'] += data.numel() * data.element_size()
            return original(data, *args, **kwargs)

        return call

    for name in ('all_gather', 'all_reduce', 'broadcast'):
        setattr(dist, name, counted(name))

    # labels only where the loss samples by class, as CRDMemoryBankHook builds banks (a sharded
    # bank with labels checks each batch's against their owners': one more small exchange)
    by_class = case['sampling'] == 'class_exact' or case['positive'] == 'relax'
    labels = torch.arange(NUM_SAMPLES) % 4 if by_class else None
    bank_dtype, anchor_dtype = getattr(torch, case['bank']), getattr(torch, case['anchor'])
    common = dict(labels=labels, dtype=bank_dtype, seed=3)
    banks = dict(
        sharded=ShardedMemoryBank(NUM_SAMPLES, FEAT_DIM, 0.5, **common),
        rows=ShardedMemoryBank(NUM_SAMPLES, FEAT_DIM, 0.5, scoring='rows', **common),
        replicated=ContrastMemoryBank(NUM_SAMPLES, FEAT_DIM, 0.5, **common),
    )
    records = []
    for iteration in range(ITERATIONS):
        idx, anchors = _batch(rank, iteration, anchor_dtype)
        samples = [BaseDataElement(sample_idx=int(i)) for i in idx]
        record = dict(idx=idx)
        for name, bank in banks.items():
            loss = CRDLoss(
                num_negatives=NUM_NEGATIVES,
                feat_dim=FEAT_DIM,
                negative_sampling=case['sampling'],
                positive=case['positive'],
            )
            loss.attach_memory_bank(bank)
            student, teacher = (a.clone().requires_grad_() for a in anchors)
            bank.reseed(iteration)
            sent.update(bytes=0, on=name != 'replicated')
            value = loss(student, teacher, samples)
            value.backward()
            sent['on'] = False
            record[name] = dict(
                loss=value.detach(),
                grad_s=student.grad,
                grad_t=teacher.grad,
                z=bank.normalizers.clone(),
                sent=sent['bytes'],
            )
        # every rank's requested keys, drawn again by the replicated sampler (the same draws)
        reference = banks['replicated']
        reference.reseed(iteration)
        positive = reference.positives(idx, case['positive'])
        negative = reference.negatives(idx, NUM_NEGATIVES, case['sampling'], shared=False)
        record['keys'] = torch.cat([positive[:, None], negative], 1)
        for bank in banks.values():
            bank.apply_staged()
        for name in ('sharded', 'rows'):
            shard = banks[name]
            record[f'{name}_shard'] = dict(
                start=shard.start,
                student=shard.student.clone(),
                teacher=shard.teacher.clone(),
                written=shard.written.clone(),
            )
        record['bank'] = dict(
            student=reference.student.clone(),
            teacher=reference.teacher.clone(),
            written=reference.written.clone(),
        )
        records.append(record)

    # CRCD reads rows (fetched from the owners): same relation loss and gradients
    crcd = {}
    for name, bank in banks.items():
        loss = CRCDLoss(num_negatives=NUM_NEGATIVES, feat_dim=FEAT_DIM, negative_sampling='uniform')
        loss.attach_memory_bank(bank)
        idx, anchors = _batch(rank, ITERATIONS, anchor_dtype)
        student, teacher = (a.clone().requires_grad_() for a in anchors)
        bank.reseed(ITERATIONS)
        negative = bank.negatives(idx, NUM_NEGATIVES, 'uniform', shared=False)
        value = loss.relation_loss(student, teacher, idx, negative)
        value.backward()
        crcd[name] = (value.detach(), student.grad, teacher.grad)

    # ranks that disagree on gradients: every rank raises, none waits in a collective
    loss = CRDLoss(num_negatives=NUM_NEGATIVES, feat_dim=FEAT_DIM, negative_sampling='uniform')
    loss.attach_memory_bank(banks['sharded'])
    idx, anchors = _batch(rank, ITERATIONS + 1, anchor_dtype)
    samples = [BaseDataElement(sample_idx=int(i)) for i in idx]
    with torch.set_grad_enabled(rank == 0):
        try:
            loss(*(a.clone().requires_grad_() for a in anchors), samples)
            disagreement = None
        except RuntimeError as error:
            disagreement = str(error)
    torch.save(
        dict(records=records, crcd=crcd, disagreement=disagreement),
        osp.join(out_dir, f'rank{rank}.pt'),
    )
    torch_dist.destroy_process_group()


def expected_anchor_bytes(keys_of_ranks, world, element_bytes, first):
    """What one rank hands to the collectives per step with anchor sending, by the protocol.

    Forward: a 4-number header, [its anchors | its keys as int32] padded to the largest rank's
    (8-byte words), its scores of the entries it owns padded to the largest owner's; backward:
    its dL/dscore padded to the largest rank's and all ranks' partial anchor gradients. The
    first step also all-reduces Z (2 float32).
    """
    bounds = [r * NUM_SAMPLES // world for r in range(world + 1)]
    entries = [keys.numel() for keys in keys_of_ranks]
    batches = [keys.shape[0] for keys in keys_of_ranks]
    every = torch.cat([keys.flatten() for keys in keys_of_ranks])
    held = [int(((every >= lo) & (every < hi)).sum()) for lo, hi in zip(bounds, bounds[1:])]
    payload = max(b * 2 * FEAT_DIM * element_bytes + n * 4 for b, n in zip(batches, entries))
    return (
        4 * 8
        + -(-payload // 8) * 8
        + max(held) * 2 * element_bytes
        + max(entries) * 2 * element_bytes
        + sum(batches) * 2 * FEAT_DIM * element_bytes
        + (2 * 4 if first else 0)
    )


def run_case(tmp_path, port, case):
    torch.multiprocessing.spawn(
        _worker, args=(case['world'], port, str(tmp_path), case), nprocs=case['world']
    )
    return [torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in range(case['world'])]


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CASES))
def test_anchor_sending_equals_the_replicated_bank_every_iteration(tmp_path, free_port, name):
    case = CASES[name]
    world = case['world']
    ranks = run_case(tmp_path, free_port, case)
    exact = case['bank'] == 'float64'
    tol = dict(rtol=1e-12, atol=1e-14) if exact else dict(rtol=1e-5, atol=1e-6)
    element_bytes = 8 if case['anchor'] == 'float64' else 4
    for iteration in range(ITERATIONS):
        records = [rank['records'][iteration] for rank in ranks]
        keys = [rec['keys'] for rec in records]
        for rank, rec in enumerate(records):
            reference = rec['replicated']
            for scoring in ('sharded', 'rows'):  # anchor sending (default), row fetching
                mine = rec[scoring]
                torch.testing.assert_close(mine['loss'], reference['loss'], **tol)
                # float32: sums over owners in another order than one bag's, a few ulps
                torch.testing.assert_close(mine['grad_s'], reference['grad_s'], **tol)
                torch.testing.assert_close(mine['grad_t'], reference['grad_t'], **tol)
                torch.testing.assert_close(mine['z'], reference['z'], **tol)
            if case.get('bytes'):
                assert rec['sharded']['sent'] == expected_anchor_bytes(
                    keys, world, element_bytes, first=iteration == 0
                ), (iteration, rank)
                # about 20 bytes per requested entry instead of 8 + 2 D x bytes per distinct row
                assert 2 * rec['sharded']['sent'] < rec['rows']['sent'], (iteration, rank)
        for scoring in ('sharded', 'rows'):
            shards = sorted((rec[f'{scoring}_shard'] for rec in records), key=lambda s: s['start'])
            for key in ('student', 'teacher', 'written'):
                whole = torch.cat([shard[key] for shard in shards])
                # the update reads only the staged embeddings (identical inputs): bit for bit
                assert torch.equal(whole, records[0]['bank'][key]), (iteration, scoring, key)
    for rank in ranks:
        crcd = rank['crcd']
        for mine, reference in zip(crcd['sharded'], crcd['replicated']):
            torch.testing.assert_close(mine, reference, **tol)
    if name == 'w2-class_exact-relax-float64':
        for rank in ranks:
            assert 'ranks [0] of 2 compute the loss with gradients' in rank['disagreement']


def test_shard_scoring_option_is_checked_and_reaches_the_bank():
    with pytest.raises(ValueError, match="shard_scoring must be one of \\('anchors', 'rows'\\)"):
        CRDMemoryBankHook(shard_scoring='rows')  # shard_banks=False
    with pytest.raises(ValueError, match='shard_scoring must be one of'):
        CRDMemoryBankHook(shard_banks=True, shard_scoring='owners')
    assert CRDMemoryBankHook(shard_banks=True).shard_scoring == 'anchors'
    spec = dict(feat_dim=4, momentum=0.5, shard_scoring='rows')
    bank = ShardedMemoryBank.from_spec(spec, 10, None, 'cpu', torch.float32, 0)
    assert bank.scoring == 'rows'
    with pytest.raises(ValueError, match='scoring must be one of'):
        ShardedMemoryBank(10, 4, 0.5, scoring='owners')


@pytest.mark.slow
def test_a_sharded_training_run_equals_the_replicated_one(
    make_imagefolder, tmp_path, cmd, free_port
):
    """tools/train.py, 2 processes, DDP: per-sample class_exact negatives scored by owners.

    Losses, Z and banks after every iteration, and the trained weights, equal the
    replicated run's.
    """
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)  # shards of 4 and 5
    runs = {}
    for shard in (True, False):
        out = tmp_path / ('sharded' if shard else 'replicated')
        out.mkdir()
        cfg = sharding_config(data, out / 'work', out, shard, max_epochs=2)
        runs[shard] = (train(cmd, cfg, out / 'cfg.py', 2, free_port + shard), out / 'work')
    assert_same_banks(runs[True][0], runs[False][0], num_samples=9)
    weights = [
        torch.load(work / 'epoch_2.pth', map_location='cpu')['state_dict']
        for _, work in runs.values()
    ]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[0][key], value, rtol=1e-4, atol=1e-6, msg=key)
