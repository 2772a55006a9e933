"""Two real processes (torch.distributed, gloo): CRD banks stay bit-identical on both ranks."""
import os.path as osp

import torch

from tiny_configs import crd_config

TESTS_DIR = osp.dirname(osp.abspath(__file__))


def test_banks_are_identical_on_both_ranks_and_updated_for_the_union(make_imagefolder, tmp_path, cmd,
                                                                     free_port):
    # 9 samples on 2 ranks: mmengine's sampler pads to 10 by repeating one sample
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    cfg = crd_config(data, tmp_path / 'work', max_epochs=1, batch_size=2,
                     hooks=[dict(type='CRDMemoryBankHook'),
                            dict(type='BankProbeHook', out_dir=str(tmp_path))],
                     extra_imports=('bank_probe', ))
    cfg.dump(tmp_path / 'crd_dist.py')
    cmd.python(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port}',
                'tools/train.py', str(tmp_path / 'crd_dist.py'), '--launcher', 'pytorch'],
               env={'PYTHONPATH': osp.pathsep.join([osp.dirname(TESTS_DIR), TESTS_DIR])}, timeout=240)

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
    assert len(all_indices) == 10 and sorted(set(all_indices)) == list(range(9))  # one padded repeat
