"""CIRKDLoss equals the CIRKD authors' memory loss on fixed inputs (float64).

The reference below is our own rewrite of the authors' formula from the facts in
docs/segmentation.md (winycg/CIRKD, losses/cirkd_memory.py, CIRKD v1 settings):
student -> projection head -> L2 norm, teacher L2 norm, labels resized with
nearest interpolation, every non-ignored pixel an anchor, the same sampled slots
of every class (class-major), logits / 0.1, KL(teacher || student) at T = 1 with
'batchmean' x T^2, 0.1 x pixel + 0.1 x region; enqueue before the loss.
"""

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

import crd_mm  # noqa: F401
from crd_mm.memory.pixel_queue import CIRKDMemory
from crd_mm.models.losses import CIRKDLoss

C, D_S, D_T = 3, 5, 4


def seg_samples(labels):
    from mmseg.structures import SegDataSample

    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(sample)
    return samples


def reference_loss(head, s_feats, t_feats, labels, pixel_memory, region_memory, p_idx, r_idx):
    """The authors' formula, written from the facts (not from crd_mm's code)."""
    s = F.normalize(head(s_feats), p=2, dim=1)
    t = F.normalize(t_feats, p=2, dim=1)
    small = F.interpolate(labels[:, None].double(), size=s.shape[-2:], mode='nearest')
    small = small[:, 0].long().reshape(-1)
    keep = small != 255
    s_rows = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1])[keep]
    t_rows = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])[keep]

    def sampled(memory, idx):
        return torch.cat([memory[c, idx] for c in range(memory.shape[0])])

    def kd(memory):
        s_logits = s_rows @ memory.t() / 0.1
        t_logits = (t_rows @ memory.t() / 0.1).detach()
        log_p_s = torch.log_softmax(s_logits / 1.0, dim=1)
        p_t = torch.softmax(t_logits / 1.0, dim=1)
        kl = (p_t * (torch.log(p_t) - log_p_s)).sum() / s_rows.shape[0]
        return kl * 1.0**2

    return 0.1 * kd(sampled(pixel_memory, p_idx)) + 0.1 * kd(sampled(region_memory, r_idx))


def authors_enqueue(pixel_memory, region_memory, pixel_ptr, region_ptr, t_feats, labels, freq):
    """The authors' enqueue rule for teacher maps whose pixels of a class in an image are equal."""
    t = F.normalize(t_feats, p=2, dim=1)
    small = F.interpolate(labels[:, None].double(), size=t.shape[-2:], mode='nearest')[:, 0].long()
    size = pixel_memory.shape[1]
    for b in range(t.shape[0]):
        feat = t[b].reshape(t.shape[1], -1)
        label = small[b].reshape(-1)
        for lb in [int(x) for x in torch.unique(label) if x != 255]:
            where = (label == lb).nonzero()[:, 0]
            region_memory[lb, region_ptr[lb]] = F.normalize(feat[:, where].mean(1), dim=0)
            region_ptr[lb] = (region_ptr[lb] + 1) % region_memory.shape[1]
            k = min(where.numel(), freq)
            rows = F.normalize(feat[:, where[:k]].t(), dim=1)
            if pixel_ptr[lb] + k >= size:
                pixel_memory[lb, -k:] = rows
                pixel_ptr[lb] = 0
            else:
                pixel_memory[lb, pixel_ptr[lb] : pixel_ptr[lb] + k] = rows
                pixel_ptr[lb] = (pixel_ptr[lb] + k) % size


def make_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    s_feats = torch.randn(2, D_S, 3, 4, dtype=torch.float64, generator=generator)
    t_feats = torch.randn(2, D_T, 3, 4, dtype=torch.float64, generator=generator)
    labels = torch.tensor(
        [[[0, 0, 1, 1], [0, 255, 1, 1], [2, 2, 2, 255]], [[1] * 4, [1, 1, 0, 0], [0, 0, 0, 0]]]
    )
    # ground truth at twice the maps' resolution
    labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)
    return s_feats.requires_grad_(), t_feats, labels


def build(enqueue='after', pixel_size=6, region_size=4, pixel_contrast=4, region_contrast=3):
    torch.manual_seed(1)
    loss = CIRKDLoss(
        num_classes=C,
        teacher_channels=D_T,
        student_channels=D_S,
        pixel_memory_size=pixel_size,
        region_memory_size=region_size,
        pixel_contrast_size=pixel_contrast,
        region_contrast_size=region_contrast,
        pixel_update_freq=2,
        enqueue=enqueue,
    ).double()
    memory = CIRKDMemory(C, pixel_size, region_size, D_T, 2, dtype=torch.float64, seed=3)
    loss.attach_memory_bank(memory)
    return loss, memory


def test_authors_defaults():
    loss = CIRKDLoss(num_classes=19, teacher_channels=512, student_channels=128)
    assert (loss.pixel_contrast_size, loss.region_contrast_size) == (4096 // 19 + 1, 1024 // 19 + 1)
    assert (loss.contrast_temperature, loss.kd_temperature) == (0.1, 1.0)
    assert (loss.pixel_weight, loss.region_weight) == (0.1, 0.1)
    assert loss.enqueue == 'before' and loss.pixel_update_freq == 16
    spec = loss.bank_requirements()
    assert (spec['pixel_memory_size'], spec['region_memory_size']) == (20000, 2000)
    with pytest.raises(ValueError, match='enqueue'):
        CIRKDLoss(num_classes=19, teacher_channels=8, enqueue='never')


def test_memory_loss_equals_the_authors_formula_values_and_gradients():
    loss, memory = build()
    s_feats, t_feats, labels = make_inputs()
    p_idx, r_idx = torch.tensor([5, 0, 3, 2]), torch.tensor([1, 3, 0])
    s_map, t_map, small = loss.embed(s_feats, t_feats, seg_samples(labels))
    ours = loss.memory_loss(s_map, t_map, small, p_idx, r_idx)
    params = [s_feats, *loss.project_head.parameters()]
    ours_grads = torch.autograd.grad(ours, params)

    reference_head = build()[0].project_head  # same seed: the same initial weights
    theirs = reference_loss(
        reference_head, s_feats, t_feats, labels, memory.pixels, memory.regions, p_idx, r_idx
    )
    theirs_grads = torch.autograd.grad(theirs, [s_feats, *reference_head.parameters()])
    assert ours.dtype == torch.float64 and ours > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    for got, want in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


def constant_regions(t_feats, labels):
    """Teacher maps whose pixels of one class in one image are equal (draw order then moot)."""
    small = F.interpolate(labels[:, None].double(), size=t_feats.shape[-2:], mode='nearest')
    small = small[:, 0].long()
    out = t_feats.clone()
    for b in range(out.shape[0]):
        for lb in torch.unique(small[b]).tolist():
            mask = small[b] == lb
            out[b][:, mask] = t_feats[b][:, mask][:, :1]
    return out


def test_enqueue_follows_the_authors_rule_with_wrap_around():
    loss, memory = build(pixel_size=3, region_size=2, pixel_contrast=3, region_contrast=2)
    s_feats, t_feats, labels = make_inputs()
    t_feats = constant_regions(t_feats, labels)
    pixels, regions = memory.pixels.clone(), memory.regions.clone()
    pixel_ptr, region_ptr = [0] * C, [0] * C
    for step in range(3):  # pointers run past the ends of both queues
        memory.reseed(step)
        memory.stage(
            F.normalize(t_feats, dim=1), loss.embed(s_feats, t_feats, seg_samples(labels))[2]
        )
        memory.apply_staged()
        authors_enqueue(pixels, regions, pixel_ptr, region_ptr, t_feats, labels, freq=2)
        torch.testing.assert_close(memory.pixels, pixels, rtol=0, atol=1e-15)
        torch.testing.assert_close(memory.regions, regions, rtol=0, atol=1e-15)
        assert memory.pixel_ptr.tolist() == pixel_ptr
        assert memory.region_ptr.tolist() == region_ptr


def test_forward_enqueues_before_the_loss_as_the_authors():
    # contrast sizes = memory sizes: every slot is sampled, and the KL does not depend on the
    # order of the sampled entries, so the value is the authors' whatever the permutation
    loss, memory = build('before', pixel_contrast=6, region_contrast=4)
    s_feats, t_feats, labels = make_inputs()
    t_feats = constant_regions(t_feats, labels)
    pixels, regions = memory.pixels.clone(), memory.regions.clone()
    memory.reseed(0)
    ours = loss(s_feats, t_feats, seg_samples(labels))
    authors_enqueue(pixels, regions, [0] * C, [0] * C, t_feats, labels, freq=2)
    everything = torch.arange(6), torch.arange(4)
    reference_head = build()[0].project_head
    theirs = reference_loss(reference_head, s_feats, t_feats, labels, pixels, regions, *everything)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    assert memory._staged == []  # applied inside forward: the hook's update has nothing left


def test_enqueue_after_keeps_the_batch_out_of_its_own_memory():
    loss, memory = build('after', pixel_contrast=6, region_contrast=4)
    s_feats, t_feats, labels = make_inputs()
    pixels, regions = memory.pixels.clone(), memory.regions.clone()
    memory.reseed(0)
    ours = loss(s_feats, t_feats, seg_samples(labels))
    reference_head = build()[0].project_head
    everything = torch.arange(6), torch.arange(4)
    theirs = reference_loss(reference_head, s_feats, t_feats, labels, pixels, regions, *everything)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    assert torch.equal(memory.pixels, pixels) and len(memory._staged) == 1
    memory.apply_staged()  # what CRDMemoryBankHook does after the iteration
    # image 0 holds classes 0, 1, 2 and image 1 classes 0, 1: one region entry per image and class
    assert memory.region_ptr.tolist() == [2, 2, 1] and not torch.equal(memory.pixels, pixels)


def test_only_ignored_pixels_give_a_zero_with_a_graph():
    loss, memory = build()
    s_feats, t_feats, labels = make_inputs()
    value = loss(s_feats, t_feats, seg_samples(torch.full_like(labels, 255)))
    assert value == 0 and value.requires_grad
