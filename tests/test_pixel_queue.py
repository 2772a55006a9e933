"""PixelQueue / CIRKDMemory (crd_mm/memory/pixel_queue.py) and PixelCRDLoss on fixed inputs."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import crd_mm  # noqa: F401
from crd_mm.memory.base import MEMORIES, BaseContrastMemory
from crd_mm.memory.pixel_queue import CIRKDMemory, PixelQueue
from crd_mm.models.losses import PixelCRDLoss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seg_samples(labels):
    """mmseg SegDataSamples carrying the given (B, H, W) label maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(sample)
    return samples


def test_importing_crd_mm_imports_no_segmentation_code_of_ours():
    """crd_mm needs no mmseg: where mmseg cannot be imported, the dense losses still build.

    (mmrazor 1.0.0 itself imports mmseg.models when it is installed, so crd_mm's own
    modules import it only in the segmentation dataset and configs.)
    """
    code = (
        'import sys\n'
        'class Block:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name == 'mmseg' or name.startswith('mmseg.'):\n"
        "            raise ImportError('mmseg blocked by the test')\n"
        'sys.meta_path.insert(0, Block())\n'
        'import crd_mm\n'
        "assert 'mmseg' not in sys.modules\n"
        'from mmrazor.registry import MODELS\n'
        "MODELS.build(dict(type='PixelCRDLoss', num_classes=3))\n"
        "MODELS.build(dict(type='CIRKDLoss', num_classes=3, teacher_channels=8))\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES='')
    out = subprocess.run(
        [sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith('ok')


def test_memories_are_registered_behind_the_base_interface():
    for name in ('PixelQueue', 'CIRKDMemory'):
        assert issubclass(MEMORIES.get(name), BaseContrastMemory)
    loss = PixelCRDLoss(num_classes=4, queue_size=8, feat_dim=6)
    spec = loss.bank_requirements()
    assert spec['needs_labels'] is False
    queue = MEMORIES.get(spec['memory']).from_spec(spec, 0, None, 'cpu', torch.float32, 3)
    assert queue.student.shape == (4, 8, 6)


def test_enqueue_is_a_per_class_ring():
    queue = PixelQueue(num_classes=3, queue_size=4, feat_dim=2, dtype=torch.float64)
    rows = torch.arange(12, dtype=torch.float64).view(6, 2)
    classes = torch.tensor([1, 1, 1, 2, 1, 1])
    queue.stage(classes, rows, -rows)
    queue.apply_staged()
    # class 1 got rows 0, 1, 2, 4, 5 in a ring of 4: as if written one at a time from slot 0,
    # row 5 overwrote row 0 and the pointer is at slot 1
    assert torch.equal(queue.student[1], rows[[5, 1, 2, 4]])
    assert torch.equal(queue.teacher[1], -rows[[5, 1, 2, 4]])
    assert queue.ptr.tolist() == [0, 1, 1]
    assert torch.equal(queue.student[2, 0], rows[3])
    initial = PixelQueue(num_classes=3, queue_size=4, feat_dim=2, dtype=torch.float64)
    assert torch.equal(queue.student[0], initial.student[0])  # class 0 untouched
    queue.stage(torch.tensor([1]), rows[:1] + 100, rows[:1])
    queue.apply_staged()
    assert torch.equal(queue.student[1, 1], rows[0] + 100)  # written at the pointer
    assert queue.ptr[1] == 2


def test_state_dict_resumes_exactly():
    queue = PixelQueue(num_classes=3, queue_size=5, feat_dim=4, seed=7)
    queue.stage(torch.tensor([0, 2, 2]), torch.randn(3, 4), torch.randn(3, 4))
    queue.apply_staged()
    queue.normalizers = torch.tensor([2.0, 3.0])
    state = queue.state_dict()
    resumed = PixelQueue(num_classes=3, queue_size=5, feat_dim=4, seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.fingerprint(), queue.fingerprint())
    update = (torch.tensor([2, 1]), torch.randn(2, 4), torch.randn(2, 4))
    for memory in (queue, resumed):
        memory.stage(*update)
        memory.apply_staged()
    assert torch.equal(resumed.teacher, queue.teacher) and torch.equal(resumed.ptr, queue.ptr)
    with pytest.raises(ValueError, match='num_classes, queue_size, feat_dim'):
        PixelQueue(num_classes=3, queue_size=6, feat_dim=4).load_state_dict(state)


def _gather_worker(rank, port, out_dir):
    import torch.distributed as torch_dist

    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2
    )
    queue = PixelQueue(num_classes=3, queue_size=4, feat_dim=2, seed=1)
    memory = CIRKDMemory(3, 8, 4, 2, pixel_update_freq=2, seed=1)
    generator = torch.Generator().manual_seed(rank)
    rows = torch.randn(3, 2, generator=generator)
    queue.stage(torch.tensor([rank, 2, 2]), rows, rows * 2)
    memory.reseed(5)
    memory.stage(
        F.normalize(torch.randn(1, 2, 2, 3, generator=generator), dim=1),
        torch.tensor([[[0, 0, 1], [1, 255, 2]]]),
    )
    queue.apply_staged()
    memory.apply_staged()
    torch.save(
        dict(rows=rows, queue=queue.state_dict(), memory=memory.state_dict()),
        os.path.join(out_dir, f'{rank}.pt'),
    )
    torch_dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_apply_every_ranks_entries_identically(tmp_path, free_port):
    torch.multiprocessing.spawn(_gather_worker, args=(free_port, str(tmp_path)), nprocs=2)
    states = [torch.load(tmp_path / f'{rank}.pt') for rank in range(2)]
    for key in ('queue', 'memory'):
        for name, value in states[0][key].items():
            other = states[1][key][name]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other, name
    # rank order: class 2 holds rank 0's two rows then rank 1's two
    expected = torch.cat([states[0]['rows'][1:], states[1]['rows'][1:]])
    assert torch.allclose(states[0]['queue']['student'][2], expected)
    assert torch.allclose(states[0]['queue']['student'][0, 0], states[0]['rows'][0])
    assert torch.allclose(states[0]['queue']['student'][1, 0], states[1]['rows'][0])
    # CIRKD: each rank enqueued one region per class present (0, 1, 2) -> pointers at 2
    assert states[0]['memory']['region_ptr'].tolist() == [2, 2, 2]


def nce_reference(anchor, positive, entries, negative_mask, z, temperature, eps):
    """CRD's Eq. 18 written directly: P = exp(s / T) / Z, Pn = 1 / M, K_i valid negatives."""
    total = entries.shape[0]
    loss = anchor.new_zeros(())
    for i in range(anchor.shape[0]):
        p_pos = torch.exp(anchor[i] @ positive[i] / temperature) / z
        negatives = entries[negative_mask[i]]
        k = negatives.shape[0]
        p_neg = torch.exp(negatives @ anchor[i] / temperature) / z
        loss = loss - torch.log(p_pos / (p_pos + k / total + eps))
        loss = loss - torch.log((k / total) / (p_neg + k / total + eps)).sum()
    return loss / anchor.shape[0]


def test_pixel_crd_equals_the_nce_formula_and_masks_the_anchor_class():
    torch.manual_seed(0)
    loss = PixelCRDLoss(num_classes=3, temperature=0.5, feat_dim=4, queue_size=5, loss_weight=2.0)
    queue = PixelQueue(3, 5, 4, dtype=torch.float64, seed=2)
    loss.attach_memory_bank(queue)
    classes = torch.tensor([0, 2, 2, 1])
    rows_s = F.normalize(torch.randn(4, 4, dtype=torch.float64), dim=1).requires_grad_()
    rows_t = F.normalize(torch.randn(4, 4, dtype=torch.float64), dim=1).requires_grad_()
    queue.normalizers = torch.tensor([1.7, 2.3], dtype=torch.float64)
    value = loss.anchor_loss(classes, rows_s, rows_t)
    entry_class = torch.arange(3).repeat_interleave(5)
    mask = entry_class[None] != classes[:, None]
    expected = 2.0 * (
        nce_reference(rows_s, rows_t.detach(), queue.teacher.flatten(0, 1), mask, 1.7, 0.5, 1e-7)
        + nce_reference(rows_t, rows_s.detach(), queue.student.flatten(0, 1), mask, 2.3, 0.5, 1e-7)
    )
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(value, (rows_s, rows_t))
    expected_grads = torch.autograd.grad(expected, (rows_s, rows_t))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # entries of an anchor's own class are not its negatives: for the class-0 anchor, new
    # class-0 entries change nothing, new class-1 entries change the loss
    first = classes == 0
    alone = loss.anchor_loss(classes[first], rows_s[first], rows_t[first])
    for memory in (queue.teacher, queue.student):
        memory[0] = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    assert torch.equal(loss.anchor_loss(classes[first], rows_s[first], rows_t[first]), alone)
    queue.teacher[1] = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    assert not torch.isclose(loss.anchor_loss(classes[first], rows_s[first], rows_t[first]), alone)


def test_pixel_crd_forward_samples_pixels_per_class_and_stages_them():
    loss = PixelCRDLoss(num_classes=3, feat_dim=4, queue_size=6, pixels_per_class=2)
    queue = PixelQueue(3, 6, 4, seed=0)
    loss.attach_memory_bank(queue)
    labels = torch.tensor([[[0, 0, 0, 255], [1, 1, 255, 255]], [[2] * 4, [2] * 4]])
    s_map = F.normalize(torch.randn(2, 4, 2, 4), dim=1).requires_grad_()
    t_map = F.normalize(torch.randn(2, 4, 2, 4), dim=1)
    # ground truth at 4x the feature map's size: resized back with nearest interpolation
    full = F.interpolate(labels[:, None].float(), size=(8, 16), mode='nearest')[:, 0]
    value = loss(s_map, t_map, seg_samples(full.long()))
    assert torch.isfinite(value)
    value.backward()
    assert s_map.grad.abs().sum() > 0
    classes, student, teacher = queue._staged[0]
    # image 0: classes 0 (3 pixels) and 1 (2 pixels), 2 each; image 1: class 2, 2 pixels
    assert sorted(classes.tolist()) == [0, 0, 1, 1, 2, 2]
    queue.apply_staged()
    assert queue.ptr.tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match='outside'):
        loss(s_map, t_map, seg_samples(torch.full((2, 8, 16), 7)))
