"""Class-aware sampling without N-sized label state: sharded banks and the queue.

Each world size runs once, in real gloo processes on the CPU (``labels_probe.py``): a
sharded bank and a replicated bank of the same seed side by side under CRD (class-exact
negatives, relaxed positives) and CRCD losses, the label state each memory keeps, a
data sample whose label disagrees with the training set's, and a class-aware queue.
"""

import math

import pytest
import torch
from labels_probe import (
    CASES,
    DIM,
    FOOTPRINT_CLASSES,
    FOOTPRINT_SAMPLES,
    QUEUE_SIZE,
    run_ranks,
)

WORLD_SIZES = [2, pytest.param(3, marks=pytest.mark.slow)]


@pytest.fixture(scope='module', params=WORLD_SIZES, ids=lambda w: f'{w}ranks')
def ranks(request, tmp_path_factory):
    """Every rank's records of one run of labels_probe.py on ``request.param`` processes."""
    return run_ranks(request.param, tmp_path_factory.mktemp(f'labels{request.param}'))


def test_sharded_class_draws_equal_the_replicated_bank_every_iteration(ranks):
    """Losses, gradients, Z and every bank row equal the replicated bank's, each iteration.

    Class-exact negatives with exact and relaxed positives, relaxed positives with
    uniform negatives, and CRCD (which recognises a negative at a batch sample's own
    row by position); rank 1 sends one batch without labels (its classes then come
    from the owners).
    """
    for case in CASES:
        for rank, records in enumerate(ranks):
            steps = records['cases'][case]
            assert len(steps) == 4, (case, rank)
            for step, record in enumerate(steps):
                where = (case, rank, step)
                sharded, replicated = record['sharded'], record['replicated']
                torch.testing.assert_close(sharded['loss'], replicated['loss'], rtol=1e-6, atol=0)
                torch.testing.assert_close(sharded['z'], replicated['z'], rtol=1e-6, atol=0)
                for key in ('grad_s', 'grad_t'):  # sums over owners: float32 rounding apart
                    torch.testing.assert_close(
                        sharded[key], replicated[key], rtol=1e-5, atol=1e-5, msg=str(where)
                    )
                low, high = record['rows']
                for key in ('student', 'teacher', 'written'):
                    assert torch.equal(sharded[key], replicated[key][low:high]), (where, key)
                assert record['bank_changed'], where  # the step wrote rows
        if case == 'crcd':  # the case CRCD's position check is for did happen
            assert sum(r['own_rows_drawn'] for rec in ranks for r in rec['cases'][case]) > 0


def test_no_rank_keeps_label_state_that_grows_with_the_dataset(ranks):
    """No tensor of a class-exact sharded bank beyond N / W + C W elements (its rows aside).

    N = 3000 samples of 7 classes; the bank has drawn, fetched and updated first. The
    replicated bank's labels and class order (N each) are what a sharded bank used to keep.
    """
    world = len(ranks)
    bound = math.ceil(FOOTPRINT_SAMPLES / world) + FOOTPRINT_CLASSES * world + 8
    for records in ranks:
        sizes = records['sharded_state']
        assert sizes['student'] == sizes['teacher'] == records['shard_rows'] * DIM
        beyond = {
            name: n for name, n in sizes.items() if name not in ('student', 'teacher') and n > bound
        }
        assert not beyond, f'tensors larger than {bound} elements: {beyond}'
        assert records['replicated_state']['labels'] == FOOTPRINT_SAMPLES  # the old cost


def test_a_label_that_disagrees_with_the_training_set_stops_every_rank(ranks):
    """Rank 1 claims a wrong label for a sample rank 0 owns: all ranks raise, nothing is written."""
    for records in ranks:
        error = records['mismatch']
        assert error['type'] == 'ValueError', error
        assert f'sample {error["sample"]} has label' in error['message'], error
        assert not error['written'] and not error['staged']


def test_a_queue_keeps_no_training_labels_and_labels_its_entries_from_the_batch(ranks):
    """A class-exact queue: no tensor of N elements; entries carry their samples' labels."""
    for records in ranks:
        queue = records['queue']
        assert max(queue['state'].values()) <= QUEUE_SIZE * DIM < FOOTPRINT_SAMPLES
        filled = queue['sample_idx'] >= 0
        assert int(filled.sum()) == QUEUE_SIZE
        assert torch.equal(
            queue['entry_labels'][filled], queue['labels'][queue['sample_idx'][filled]]
        )


def test_a_class_aware_queue_refuses_a_batch_without_labels_on_every_rank(ranks):
    """Rank 1's batch has no gt_label: a queue cannot look it up, so every rank stops."""
    for records in ranks:
        error = records['queue']['missing']
        assert error['type'] == 'ValueError', error
        assert 'carry no single gt_label' in error['message'], error
