"""Class-aware memories on W real gloo processes (CPU), for tests/test_sharded_labels.py.

``python tests/labels_probe.py RANK WORLD PORT OUT_DIR`` is one rank; :func:`run_ranks`
starts all of them and returns what each rank saved (``OUT_DIR/rank<r>.pth``):

* ``cases``: per loss case and iteration, a sharded and a replicated bank of the same
  seed and labels, each with its own loss on the same batch: losses, gradients, Z and
  the rows after the update (the replicated bank whole, the sharded one this rank's shard);
* ``sharded_state``/``replicated_state``: the elements of every tensor each bank keeps
  (N = 3000 samples, 7 classes), after two class-aware training steps;
* ``mismatch``: what each rank raised when rank 1's data sample claimed a wrong label;
* ``queue``: a class-exact queue's tensors, entries, and what each rank raised when
  rank 1's batch carried no labels.
"""

import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import traceback

import torch

NUM_SAMPLES, NUM_CLASSES, DIM, BATCH, NEGATIVES, STEPS = 30, 6, 8, 4, 8, 4
FOOTPRINT_SAMPLES, FOOTPRINT_CLASSES, QUEUE_SIZE = 3000, 7, 8
# loss case: (loss type, its arguments)
CASES = {
    'class_exact': ('CRDLoss', dict(negative_sampling='class_exact')),
    'class_exact_relax': ('CRDLoss', dict(negative_sampling='class_exact', positive='relax')),
    'uniform_relax': ('CRDLoss', dict(negative_sampling='uniform', positive='relax')),
    'crcd': ('CRCDLoss', dict(negative_sampling='class_exact', temperature=0.05)),
}
TESTS_DIR = osp.dirname(osp.abspath(__file__))


def training_labels(num_samples, num_classes, seed):
    """Unbalanced labels (class c about twice as common as class c + 2); class 3 is empty."""
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(num_samples, generator=generator) ** 2 * num_classes).long()
    labels[labels == 3] = 2
    labels[-1] = num_classes - 1  # C = num_classes
    return labels


def batch(labels, rank, step, with_labels=True):
    """This rank's batch of one step: indices, data samples, unit student/teacher embeddings."""
    from mmengine.structures import BaseDataElement

    generator = torch.Generator().manual_seed(1000 * step + rank)
    idx = torch.randint(0, labels.numel(), (BATCH,), generator=generator)
    samples = [
        BaseDataElement(
            sample_idx=int(i), **({'gt_label': labels[i : i + 1]} if with_labels else {})
        )
        for i in idx
    ]
    embeds = [
        torch.nn.functional.normalize(torch.randn(BATCH, DIM, generator=generator), dim=1)
        for _ in range(2)
    ]
    return idx, samples, embeds


def train_step(loss, memory, samples, embeds, iteration):
    """One iteration as the hook and the runner run it: reseed, forward, backward, update."""
    memory.reseed(iteration)
    s, t = (e.clone().requires_grad_() for e in embeds)
    value = loss(s, t, samples)
    value.backward()
    memory.apply_staged()
    return value.detach(), s.grad, t.grad


def build_loss(case):
    from mmrazor.registry import MODELS

    loss_type, kwargs = CASES[case]
    return MODELS.build(dict(type=loss_type, num_negatives=NEGATIVES, feat_dim=DIM, **kwargs))


def compare_case(case, rank):
    """A sharded and a replicated bank, same seed and batches, each under its own loss."""
    from crd_mm.memory import ContrastMemoryBank, ShardedMemoryBank

    labels = training_labels(NUM_SAMPLES, NUM_CLASSES, seed=0)
    banks = {
        'sharded': ShardedMemoryBank(NUM_SAMPLES, DIM, 0.5, labels=labels, device='cpu', seed=5),
        'replicated': ContrastMemoryBank(
            NUM_SAMPLES, DIM, 0.5, labels=labels, device='cpu', seed=5
        ),
    }
    losses = {kind: build_loss(case) for kind in banks}
    for kind, bank in banks.items():
        losses[kind].attach_memory_bank(bank)
    sharded, replicated = banks['sharded'], banks['replicated']
    steps = []
    for step in range(STEPS):
        idx, samples, embeds = batch(labels, rank, step, with_labels=(rank, step) != (1, 2))
        record = dict(rows=(sharded.start, sharded.stop))
        if case == 'crcd':  # the negatives CRCD draws: how many fall on a batch sample's row
            replicated.reseed(step)
            negative = replicated.negatives(idx, NEGATIVES, 'class_exact', shared=False)
            record['own_rows_drawn'] = int((negative[..., None] == idx).any(-1).sum())
        before = replicated.student.clone()
        for kind, bank in banks.items():
            value, grad_s, grad_t = train_step(losses[kind], bank, samples, embeds, step)
            record[kind] = dict(
                loss=value,
                grad_s=grad_s,
                grad_t=grad_t,
                z=bank.normalizers.clone(),
                student=bank.student.clone(),
                teacher=bank.teacher.clone(),
                written=bank.written.clone(),
            )
        record['bank_changed'] = not torch.equal(before, replicated.student)
        steps.append(record)
    return steps


def storage_elements(memory):
    """Per attribute of ``memory``, the most elements any tensor in it holds (its storage)."""

    def tensors(value):
        if torch.is_tensor(value):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from tensors(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from tensors(item)

    sizes = {}
    for name, value in vars(memory).items():
        found = [t.untyped_storage().nbytes() // t.element_size() for t in tensors(value)]
        if found:
            sizes[name] = max(found)
    return sizes


def footprint(rank):
    """Two class-aware steps on N = 3000 samples, then the elements of every bank tensor."""
    from crd_mm.memory import ContrastMemoryBank, ShardedMemoryBank

    labels = training_labels(FOOTPRINT_SAMPLES, FOOTPRINT_CLASSES, seed=1)
    bank = ShardedMemoryBank(FOOTPRINT_SAMPLES, DIM, 0.5, labels=labels, device='cpu', seed=2)
    loss = build_loss('class_exact_relax')
    loss.attach_memory_bank(bank)
    for step in range(2):
        _, samples, embeds = batch(labels, rank, step)
        train_step(loss, bank, samples, embeds, step)
    replicated = ContrastMemoryBank(FOOTPRINT_SAMPLES, DIM, 0.5, labels=labels, device='cpu')
    return dict(
        sharded_state=storage_elements(bank),
        shard_rows=bank.stop - bank.start,
        replicated_state=storage_elements(replicated),
    )


def raised(call):
    """What ``call()`` raised: type and message (None if it returned)."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 (the test reads which error each rank saw)
        return dict(type=type(error).__name__, message=str(error))
    return dict(type=None, message='')


def mismatch(rank):
    """Rank 1 claims a wrong label for sample 0 (rank 0's row); rank 0's batch is right."""
    from crd_mm.memory import ShardedMemoryBank

    labels = training_labels(NUM_SAMPLES, NUM_CLASSES, seed=0)
    bank = ShardedMemoryBank(NUM_SAMPLES, DIM, 0.5, labels=labels, device='cpu', seed=5)
    loss = build_loss('class_exact')
    loss.attach_memory_bank(bank)
    idx, samples, embeds = batch(labels, rank, 0)
    if rank == 1:
        samples[0].sample_idx, samples[0].gt_label = 0, (labels[:1] + 1) % NUM_CLASSES
    error = raised(lambda: train_step(loss, bank, samples, embeds, 0))
    return dict(error, sample=0, written=bool(bank.written.any()), staged=bool(bank._staged))


def queue(rank):
    """A class-exact queue: two steps with labels, then rank 1's batch without them."""
    from crd_mm.memory import ContrastQueue

    labels = training_labels(FOOTPRINT_SAMPLES, FOOTPRINT_CLASSES, seed=1)
    memory = ContrastQueue(FOOTPRINT_SAMPLES, QUEUE_SIZE, DIM, labels=labels, device='cpu', seed=3)
    from mmrazor.registry import MODELS

    loss = MODELS.build(dict(type='CRDLoss', memory='queue', queue_size=QUEUE_SIZE, feat_dim=DIM))
    loss.attach_memory_bank(memory)
    for step in range(2):
        _, samples, embeds = batch(labels, rank, step)
        train_step(loss, memory, samples, embeds, step)
    state = storage_elements(memory)
    _, samples, embeds = batch(labels, rank, 2, with_labels=rank != 1)
    return dict(
        state=state,
        sample_idx=memory.sample_idx.clone(),
        entry_labels=memory.entry_labels.clone(),
        labels=labels,
        missing=raised(lambda: train_step(loss, memory, samples, embeds, 2)),
    )


def main(rank, world, port, out_dir):
    import torch.distributed as torch_dist

    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world
    )
    import crd_mm  # noqa: F401  (registers the losses)

    records = dict(cases={case: compare_case(case, rank) for case in CASES})
    records.update(footprint(rank))
    records['mismatch'] = mismatch(rank)
    records['queue'] = queue(rank)
    torch.save(records, osp.join(out_dir, f'rank{rank}.pth'))
    torch_dist.destroy_process_group()


def run_ranks(world, out_dir, timeout=400):
    """Run this script on ``world`` processes; every rank's records, in rank order."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR]),
        CUDA_VISIBLE_DEVICES='',  # CPU, whatever the machine has
        OMP_NUM_THREADS='1',
    )
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), str(world), str(port), str(out_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for rank in range(world)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired as timed_out:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        outputs += [proc.communicate()[0] for proc in procs[len(outputs) :]]
        message = f'ranks did not finish in {timeout} s:\n' + '\n'.join(outputs)
        raise AssertionError(message) from timed_out
    failed = [r for r, proc in enumerate(procs) if proc.returncode != 0]
    if failed:
        raise AssertionError(
            f'ranks {failed} failed:\n' + '\n'.join(outputs[r][-4000:] for r in failed)
        )
    return [torch.load(osp.join(out_dir, f'rank{r}.pth')) for r in range(world)]


if __name__ == '__main__':
    try:
        main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    except Exception:
        traceback.print_exc()
        sys.exit(1)
