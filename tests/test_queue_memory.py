"""CRD with queue negatives: the FIFO, its NCE normalisation, errors, and 2 real gloo processes."""

import math
import os.path as osp
import shutil

import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from tiny_configs import crd_config

from crd_mm.memory import ContrastQueue
from crd_mm.memory.bank import initial_rows
from crd_mm.models.losses import CRDLoss

TESTS_DIR = osp.dirname(osp.abspath(__file__))
QUEUE = 'distiller.distill_losses.loss_crd'


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(memory='queue'), 'queue_size >= 1'),
        (dict(memory='queue', queue_size=0), 'queue_size >= 1'),
        (
            dict(memory='queue', queue_size=8, share_negatives=True, negative_sampling='uniform'),
            'do not apply',
        ),
        (dict(memory='queue', queue_size=8, positive='relax'), 'do not apply'),
        (dict(queue_size=8), "memory='queue' only"),
        (dict(memory='ring'), 'memory must be one of'),
    ],
)
def test_options_that_do_not_combine_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CRDLoss(**kwargs)


def test_a_num_negatives_given_to_a_queue_is_ignored():
    """An inherited bank recipe's num_negatives does not stop a queue (it is logged as ignored)."""
    loss = CRDLoss(memory='queue', queue_size=8, num_negatives=4)
    assert loss.bank_requirements()['memory'] == 'queue'


def warnings_while(action):
    """The WARNING records mmengine's current logger emits while ``action()`` runs."""
    import logging

    from mmengine.logging import MMLogger

    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        action()
    finally:
        logger.removeHandler(handler)
    return [r.getMessage() for r in records]


@pytest.mark.parametrize('batch_norm', [False, True])
def test_a_queue_fed_by_the_paper_heads_is_warned_about_before_training(
    make_imagefolder, tmp_path, batch_norm
):
    """The hook names the connectors of a queue without batch_norm=True (they collapse)."""
    data = make_imagefolder(tmp_path / 'data')
    cfg = crd_config(
        data, tmp_path / 'work', loss_cfg=dict(memory='queue', queue_size=4, num_negatives=None)
    )
    for head in ('crd_s', 'crd_t'):
        cfg.model.distiller.connectors[head].batch_norm = batch_norm
    runner = Runner.from_cfg(cfg)
    messages = warnings_while(runner.train)
    collapse = [m for m in messages if 'without batch_norm=True' in m]
    if batch_norm:
        assert not collapse
    else:
        assert len(collapse) == 1
        assert "connector 'crd_s' and connector 'crd_t'" in collapse[0]


def queue_teacher_entries_after_training(batch_norm: bool, steps: int = 120) -> torch.Tensor:
    """The queue's teacher entries after CRD trains two small MLPs through CRDConnectors.

    The features are non-negative (ReLU outputs, as pooled CNN features are), so the
    paper's Linear + L2 heads start with every sample's embedding inside one cone.
    """
    from crd_mm.models.connectors import CRDConnector

    torch.manual_seed(0)
    num, classes, queue_size, batch = 2048, 8, 512, 32
    labels = torch.arange(num) % classes
    inputs = torch.randn(classes, 32)[labels] * 2 + torch.randn(num, 32)

    def mlp():
        return torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU()
        )

    teacher, student = mlp().requires_grad_(False), mlp()
    heads = [CRDConnector(dim_in=64, batch_norm=batch_norm) for _ in range(2)]
    loss = CRDLoss(memory='queue', queue_size=queue_size, negative_sampling='uniform')
    queue = ContrastQueue(num, queue_size, 128)
    loss.attach_memory_bank(queue)
    params = [*student.parameters(), *heads[0].parameters(), *heads[1].parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    draws = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, num, (batch,), generator=draws)
        s, t = heads[0](student(inputs[idx])), heads[1](teacher(inputs[idx]))
        contrast = queue.contrast(idx, s, t, 'exact', None, 'uniform', False)
        value = loss.scored_loss(s, t, contrast)
        queue.stage(idx, s, t)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        queue.apply_staged()
    assert bool((queue.sample_idx >= 0).all()), 'the queue holds only real entries by now'
    return queue.teacher


def mean_pairwise_cosine(rows: torch.Tensor) -> float:
    cosine = rows @ rows.t()
    return float(cosine[~torch.eye(len(rows), dtype=torch.bool)].mean())


def test_batch_normalised_heads_keep_a_queue_from_collapsing():
    """With the paper's heads every queued teacher embedding becomes one vector; with BN, not.

    The collapse is what made queue runs train below the student alone on real photos
    (docs/memory.md): both heads emit one vector, every score sits at T log(Z / K).
    """
    assert mean_pairwise_cosine(queue_teacher_entries_after_training(batch_norm=False)) > 0.95
    assert abs(mean_pairwise_cosine(queue_teacher_entries_after_training(batch_norm=True))) < 0.2


def test_a_queue_longer_than_the_dataset_is_refused():
    with pytest.raises(ValueError, match=r'between 1 and the training-set size \(10\)'):
        ContrastQueue(10, 11, 8)
    assert ContrastQueue(10, 10, 8).queue_size == 10


def test_queue_starts_full_of_the_bank_initial_rows_and_is_a_fifo():
    queue = ContrastQueue(50, 5, 4, labels=torch.arange(50) % 7, seed=3)
    assert torch.equal(queue.student, initial_rows(5, 4, 6)) and torch.equal(
        queue.teacher, initial_rows(5, 4, 7)
    )
    fifo = [
        (-1, s, t) for s, t in zip(queue.student, queue.teacher)
    ]  # (sample index, rows), oldest first

    def push(idx, rows):
        queue.stage(torch.tensor(idx), rows, -rows, labels=torch.tensor(idx) % 7)
        queue.apply_staged()
        seen = set()
        for i, row in zip(idx, rows):
            if i not in seen and torch.isfinite(row).all():
                seen.add(i)
                fifo.append((i, row, -row))
        del fifo[:-5]
        assert queue.ordered(queue.sample_idx).tolist() == [i for i, _, _ in fifo]
        assert torch.equal(queue.ordered(queue.student), torch.stack([s for _, s, _ in fifo]))
        assert torch.equal(queue.ordered(queue.teacher), torch.stack([t for _, _, t in fifo]))
        labels = queue.ordered(queue.entry_labels).tolist()
        assert labels == [i % 7 if i >= 0 else -1 for i, _, _ in fifo]

    push([10, 11, 12], torch.randn(3, 4))
    bad = torch.randn(4, 4)
    bad[1, 0] = float('nan')
    push([13, 14, 13, 15], bad)  # a repeat is enqueued once, a non-finite row not at all
    push(list(range(20, 27)), torch.randn(7, 4))  # more than Q at once: the last Q stay
    assert (queue.sample_idx >= 0).all()


def nce_reference(anchor, positive, negatives, valid, queue_size, z, eps):
    """Paper Eq. 18 written out per sample, float64: P = exp(s) / Z, Pn = 1 / Q, K_i valid."""
    total = 0.0
    for i in range(anchor.shape[0]):
        k = int(valid[i].sum())
        kpn = k / queue_size
        p0 = math.exp(float(anchor[i] @ positive[i]) / 0.07) / z
        total -= math.log(p0 / (p0 + kpn + eps))
        for j in valid[i].nonzero().flatten().tolist():
            p = math.exp(float(anchor[i] @ negatives[j]) / 0.07) / z
            total -= math.log(kpn / (p + kpn + eps))
    return total / anchor.shape[0]


def test_queue_loss_is_nce_with_noise_over_the_queue_and_masks_the_class_and_the_sample():
    torch.manual_seed(0)
    labels = torch.arange(30) % 3
    queue = ContrastQueue(30, 6, 8, labels=labels, dtype=torch.float64)
    queued = torch.tensor([0, 4, 8, 9, 13, 17])
    queue.stage(
        queued,
        F.normalize(torch.randn(6, 8), dim=1).double(),
        F.normalize(torch.randn(6, 8), dim=1).double(),
        labels=labels[queued],
    )
    queue.apply_staged()
    loss = CRDLoss(memory='queue', queue_size=6, feat_dim=8, loss_weight=0.5)
    loss.attach_memory_bank(queue)
    idx = torch.tensor([4, 5, 12])
    s = F.normalize(torch.randn(3, 8, dtype=torch.float64), dim=1).requires_grad_()
    t = F.normalize(torch.randn(3, 8, dtype=torch.float64), dim=1).requires_grad_()
    samples = [BaseDataElement(sample_idx=int(i), gt_label=labels[i : i + 1]) for i in idx]
    value = loss(s, t, samples)

    # valid negatives: queued samples of another class, never the anchor's own sample
    valid = (queue.entry_labels[None] != labels[idx][:, None]) & (
        queue.sample_idx[None] != idx[:, None]
    )
    assert valid.sum(1).tolist() == [4, 4, 4] and not valid[0, queue.sample_idx.tolist().index(4)]
    scores_s = torch.cat([(s * t).sum(1, keepdim=True), s @ queue.teacher.t()], 1).detach() / 0.07
    scores_t = torch.cat([(s * t).sum(1, keepdim=True), t @ queue.student.t()], 1).detach() / 0.07
    mask = torch.cat([torch.ones(3, 1, dtype=torch.bool), valid], 1)
    z = torch.tensor(
        [float(sc.exp()[mask].mean()) * 6 for sc in (scores_s, scores_t)], dtype=torch.float64
    )
    torch.testing.assert_close(
        queue.normalizers.double(), z, rtol=1e-6, atol=0
    )  # Z = Q mean(exp s)
    z_s, z_t = queue.normalizers.tolist()
    expected = 0.5 * (
        nce_reference(s.detach(), t.detach(), queue.teacher, valid, 6, z_s, 1e-7)
        + nce_reference(t.detach(), s.detach(), queue.student, valid, 6, z_t, 1e-7)
    )
    assert float(value) == pytest.approx(expected, rel=1e-5)
    uniform = queue.contrast(
        idx, s, t, positive='exact', num_negatives=None, negative_sampling='uniform', shared=False
    )
    assert uniform.valid.sum(1).tolist() == [
        6,
        7,
        7,
    ]  # the positive and every queued sample but the anchor's
    value.backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0
    assert queue._staged[0][0].tolist() == [4, 5, 12]


def test_queue_state_round_trip_and_size_check():
    queue = ContrastQueue(20, 4, 3, seed=1)
    queue.stage(torch.tensor([1, 2, 3]), torch.randn(3, 3), torch.randn(3, 3))
    queue.apply_staged()
    queue.normalizers = torch.tensor([2.0, 3.0])
    other = ContrastQueue(20, 4, 3, seed=9)
    other.load_state_dict(queue.state_dict())
    assert other.head == queue.head == 3 and torch.equal(other.fingerprint(), queue.fingerprint())
    with pytest.raises(ValueError, match='queue_size, feat_dim, dataset size'):
        ContrastQueue(20, 5, 3).load_state_dict(queue.state_dict())


def test_shard_banks_without_a_bank_is_refused(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data')
    cfg = crd_config(
        data,
        tmp_path / 'work',
        loss_cfg=dict(memory='queue', queue_size=4, num_negatives=None),
        hooks=[dict(type='CRDMemoryBankHook', shard_banks=True)],
    )
    with pytest.raises(ValueError, match='no bank to shard'):
        Runner.from_cfg(cfg).train()


def queue_run(cmd, data, out, port, max_epochs, resume=None):
    out.mkdir(parents=True, exist_ok=True)
    hooks = [dict(type='CRDMemoryBankHook'), dict(type='MemoryProbeHook', out_dir=str(out))]
    cfg = crd_config(
        data,
        out / 'work',
        max_epochs=max_epochs,
        batch_size=2,
        hooks=hooks,
        loss_cfg=dict(memory='queue', queue_size=5, num_negatives=None),
        extra_imports=('memory_probe',),
    )
    cfg.dump(out / 'cfg.py')
    args = [
        '-m',
        'torch.distributed.run',
        '--nproc_per_node=2',
        f'--master_port={port}',
        'tools/train.py',
        str(out / 'cfg.py'),
        '--launcher',
        'pytorch',
    ] + (['--resume', str(resume)] if resume else [])
    cmd.python(
        args, env={'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])}, timeout=300
    )
    return [torch.load(out / f'memory_probe_rank{r}.pth', weights_only=False) for r in (0, 1)]


def check_fifo_across_ranks(ranks, queue_size, name=QUEUE):
    """Every rank holds the same queue: after a step, the old one plus all ranks' rows in order."""
    for rec0, rec1 in zip(*ranks):
        for when in ('before', 'after'):
            a, b = rec0[when][name], rec1[when][name]
            assert a['head'] == b['head']
            for key in ('student', 'teacher', 'sample_idx', 'entry_labels'):
                assert torch.equal(a[key], b[key]), key
            assert (a['normalizers'] is None and b['normalizers'] is None) or torch.equal(
                a['normalizers'], b['normalizers']
            )
        before, after = rec0['before'][name], rec0['after'][name]
        fifo = [
            (int(i), s, t)
            for i, s, t in zip(
                torch.roll(before['sample_idx'], -before['head']),
                torch.roll(before['student'], -before['head'], 0),
                torch.roll(before['teacher'], -before['head'], 0),
            )
        ]
        seen = set()
        for rec in (rec0, rec1):
            for idx, s, t in rec['staged'][name]:
                for i, srow, trow in zip(idx.tolist(), s, t):
                    if i not in seen:
                        seen.add(i)
                        fifo.append((i, srow, trow))
        fifo = fifo[-queue_size:]

        def order(x, head=after['head']):
            return torch.roll(x, -head, 0)

        assert order(after['sample_idx']).tolist() == [i for i, _, _ in fifo]
        assert torch.equal(order(after['student']), torch.stack([s for _, s, _ in fifo]))
        assert torch.equal(order(after['teacher']), torch.stack([t for _, _, t in fifo]))
        labels = order(after['entry_labels']).tolist()
        assert labels == [i // 3 if i >= 0 else -1 for i, _, _ in fifo]  # 3 images per class folder


# the default suite checks the 2-process FIFO in test_sharded_bank.py (one run for both)
@pytest.mark.slow
def test_two_processes_hold_one_fifo_of_all_ranks_embeddings(
    make_imagefolder, tmp_path, cmd, free_port
):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    ranks = queue_run(cmd, data, tmp_path / 'run', free_port, max_epochs=1)
    assert len(ranks[0]) == 3
    check_fifo_across_ranks(ranks, 5)
    assert (
        ranks[0][-1]['after'][QUEUE]['sample_idx'] >= 0
    ).all()  # 10 rows enqueued through a queue of 5


@pytest.mark.slow
def test_queue_resume_is_exact(make_imagefolder, tmp_path, cmd, free_port):
    """2 epochs in one run == 1 epoch + checkpoint + resume: the same queue and losses, exactly."""
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    straight = queue_run(cmd, data, tmp_path / 'straight', free_port, max_epochs=2)
    queue_run(cmd, data, tmp_path / 'first', free_port + 1, max_epochs=1)
    shutil.copytree(tmp_path / 'first' / 'work', tmp_path / 'second' / 'work')
    resumed = queue_run(
        cmd,
        data,
        tmp_path / 'second',
        free_port + 2,
        max_epochs=2,
        resume=tmp_path / 'second' / 'work' / 'epoch_1.pth',
    )
    check_fifo_across_ranks(resumed, 5)
    for rank in (0, 1):
        tail = straight[rank][-len(resumed[rank]) :]
        assert [r['iter'] for r in tail] == [r['iter'] for r in resumed[rank]] == [3, 4, 5]
        for a, b in zip(tail, resumed[rank]):
            assert a['losses'] == b['losses']
            for when in ('before', 'after'):
                for key in ('student', 'teacher', 'sample_idx'):
                    assert torch.equal(a[when][QUEUE][key], b[when][QUEUE][key]), key
                assert str(a[when][QUEUE]['normalizers']) == str(b[when][QUEUE]['normalizers'])
