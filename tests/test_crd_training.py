"""CRD in real mmengine Runners: training, checkpoints, resume, and the missing-hook error."""

import glob
import os.path as osp
import shutil

import pytest
import torch
from mmengine.runner import Runner
from tiny_configs import crd_config


def build_runner(cfg):
    return Runner.from_cfg(cfg)


def load(path):
    return torch.load(path, map_location='cpu')  # weights_only: the compat allow-list at work


def test_crd_trains_and_checkpoints_its_banks(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    runner = build_runner(crd_config(data, tmp_path / 'work', max_epochs=1))
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')
    bank = hook.banks['distiller.distill_losses.loss_crd']
    assert bank.num_samples == 12 and bank.written.all()
    assert not any(
        isinstance(b, torch.Tensor) and b.data_ptr() == bank.student.data_ptr()
        for b in runner.model.state_dict().values()
    )
    checkpoint = load(osp.join(tmp_path, 'work', 'epoch_1.pth'))
    saved = checkpoint['crd_memory_banks']['distiller.distill_losses.loss_crd']
    assert torch.equal(saved['student'], bank.student.cpu())  # banks live on the model's device
    assert torch.equal(saved['normalizers'], bank.normalizers.cpu())
    assert not any('memory' in key or 'bank' in key for key in checkpoint['state_dict'])
    scalars = runner.message_hub.log_scalars
    assert 'train/loss_crd/z_s' in scalars and 'train/distill.loss_crd' in scalars
    assert scalars['train/loss_crd/coverage'].current() == 1.0


def test_crd_loss_without_the_hook_names_the_hook(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data')
    runner = build_runner(crd_config(data, tmp_path / 'work', hooks=[]))
    with pytest.raises(RuntimeError, match='CRDMemoryBankHook'):
        runner.train()


def test_resume_gives_the_same_banks_constants_and_losses(make_imagefolder, tmp_path):
    """2 epochs in one run == 1 epoch + checkpoint + resume + 1 epoch."""
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    build_runner(crd_config(data, tmp_path / 'straight', max_epochs=2)).train()
    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    shutil.copy(tmp_path / 'straight' / 'epoch_1.pth', resumed_dir / 'epoch_1.pth')
    cfg = crd_config(data, resumed_dir, max_epochs=2)
    cfg.resume, cfg.load_from = True, str(resumed_dir / 'epoch_1.pth')
    build_runner(cfg).train()

    straight, resumed = (
        load(tmp_path / 'straight' / 'epoch_2.pth'),
        load(resumed_dir / 'epoch_2.pth'),
    )
    for name, state in straight['crd_memory_banks'].items():
        other = resumed['crd_memory_banks'][name]
        for key in ('student', 'teacher', 'normalizers', 'written'):
            assert torch.equal(state[key], other[key]), key
    for key, value in straight['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][key]), key
    losses = [
        ckpt['message_hub']['log_scalars']['train/distill.loss_crd'].data[0]
        for ckpt in (straight, resumed)
    ]
    assert len(losses[0]) == 6 and (losses[0][-3:] == losses[1][-3:]).all()


def test_resume_with_a_different_training_set_is_refused(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data', num_classes=2, per_class=4)
    build_runner(crd_config(data, tmp_path / 'first', max_epochs=1)).train()
    bigger = make_imagefolder(tmp_path / 'bigger', num_classes=2, per_class=5)
    cfg = crd_config(bigger, tmp_path / 'second', max_epochs=2)
    cfg.resume, cfg.load_from = True, glob.glob(str(tmp_path / 'first' / 'epoch_1.pth'))[0]
    with pytest.raises(
        ValueError, match='holds 8 x 16 rows but the current training set and loss need 10 x 16'
    ):
        build_runner(cfg).train()
