"""Ensemble distillation (MultiTeacherDistill, MultiTeacherDistiller) in real Runners and processes.

Two tiny teachers of different widths (``tiny_configs.TINY_TEACHERS``) are
loaded from real checkpoints written here (perturbed weights, so a teacher
that kept its initial weights would be noticed) and distilled into a tiny
student with CRD against each teacher plus KD on their averaged logits.
"""

import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner
from mmpretrain.structures import DataSample
from tiny_configs import (
    TINY_TEACHERS,
    crcd_distiller,
    crd_config,
    crd_distiller,
    image_folder_loader,
    multi_teacher_config,
    multi_teacher_distiller,
    tiny_classifier,
)

from crd_mm.memory.bank import ContrastMemoryBank

TESTS_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(TESTS_DIR)
BANKS = ['distiller.distill_losses.loss_crd_t1', 'distiller.distill_losses.loss_crd_t2']


def write_checkpoint(path, model_cfg, seed):
    """A real checkpoint of ``model_cfg``; weights and BN statistics differ from a fresh init."""
    torch.manual_seed(seed)
    state = MODELS.build(model_cfg).state_dict()
    state = {
        k: v + 0.05 + 0.05 * torch.rand_like(v) if v.is_floating_point() else v
        for k, v in state.items()
    }
    torch.save(dict(state_dict=state, meta=dict()), path)
    return state


@pytest.fixture
def teacher_ckpts(tmp_path):
    """name -> (path, state dict) of the tiny teachers' checkpoints."""
    out = {}
    for seed, (name, width) in enumerate(TINY_TEACHERS.items()):
        path = str(tmp_path / f'{name}.pth')
        out[name] = (path, write_checkpoint(path, tiny_classifier(width), seed))
    return out


def paths(ckpts):
    return {name: path for name, (path, _) in ckpts.items()}


def load(path):
    return torch.load(path, map_location='cpu')


def bank_hook(runner):
    return next(h for h in runner.hooks if type(h).__name__ == 'CRDMemoryBankHook')


# ------------------------------------------------------------------- training
def test_two_teachers_train_frozen_with_a_bank_pair_each(make_imagefolder, tmp_path, teacher_ckpts):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    runner = Runner.from_cfg(multi_teacher_config(data, tmp_path / 'work', paths(teacher_ckpts)))
    student_before = {k: v.clone() for k, v in runner.model.student.state_dict().items()}
    runner.train()

    model = runner.model
    model.train()  # what the runner calls every epoch
    for name, (_, state) in teacher_ckpts.items():
        teacher = model.teachers[name]
        # loaded, and unchanged by training (weights and BN statistics alike)
        assert set(teacher.state_dict()) == set(state)
        for key, value in teacher.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
        assert not any(m.training for m in teacher.modules())
    assert model.student.training
    assert any(not torch.equal(v, student_before[k]) for k, v in model.student.state_dict().items())

    banks = bank_hook(runner).banks
    assert sorted(banks) == BANKS
    assert all(bank.num_samples == 12 and bank.written.all() for bank in banks.values())
    assert not torch.equal(banks[BANKS[0]].teacher, banks[BANKS[1]].teacher)
    checkpoint = load(tmp_path / 'work' / 'epoch_1.pth')
    for name in BANKS:
        assert torch.equal(
            checkpoint['crd_memory_banks'][name]['teacher'], banks[name].teacher.cpu()
        )
    scalars = runner.message_hub.log_scalars
    for key in ('distill.loss_kd', 'distill.loss_crd_t1', 'distill.loss_crd_t2', 'student.loss'):
        assert f'train/{key}' in scalars, key
    assert 'train/loss_crd_t2/coverage' in scalars


def test_resume_restores_both_teachers_banks_exactly(make_imagefolder, tmp_path, teacher_ckpts):
    """2 epochs in one run == 1 epoch + checkpoint + resume + 1 epoch: both banks, all weights."""
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    Runner.from_cfg(
        multi_teacher_config(data, tmp_path / 'straight', paths(teacher_ckpts), max_epochs=2)
    ).train()
    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    shutil.copy(tmp_path / 'straight' / 'epoch_1.pth', resumed_dir / 'epoch_1.pth')
    cfg = multi_teacher_config(data, resumed_dir, paths(teacher_ckpts), max_epochs=2)
    cfg.resume, cfg.load_from = True, str(resumed_dir / 'epoch_1.pth')
    Runner.from_cfg(cfg).train()

    straight, resumed = (
        load(tmp_path / 'straight' / 'epoch_2.pth'),
        load(resumed_dir / 'epoch_2.pth'),
    )
    assert sorted(straight['crd_memory_banks']) == sorted(resumed['crd_memory_banks']) == BANKS
    for name in BANKS:
        for key in ('student', 'teacher', 'normalizers', 'written'):
            assert torch.equal(
                straight['crd_memory_banks'][name][key], resumed['crd_memory_banks'][name][key]
            ), (name, key)
    assert set(straight['state_dict']) == set(resumed['state_dict'])
    for key, value in straight['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][key]), key
    for loss in ('distill.loss_crd_t1', 'distill.loss_crd_t2', 'distill.loss_kd'):
        values = [
            ckpt['message_hub']['log_scalars'][f'train/{loss}'].data[0]
            for ckpt in (straight, resumed)
        ]
        assert len(values[0]) == 6 and (values[0][-3:] == values[1][-3:]).all(), loss


def test_two_gloo_processes_keep_every_bank_identical(
    make_imagefolder, tmp_path, cmd, free_port, teacher_ckpts
):
    # 9 samples on 2 ranks: mmengine's sampler pads to 10 by repeating one sample
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=3)
    cfg = multi_teacher_config(
        data,
        tmp_path / 'work',
        paths(teacher_ckpts),
        batch_size=2,
        hooks=[dict(type='CRDMemoryBankHook'), dict(type='BankProbeHook', out_dir=str(tmp_path))],
        extra_imports=('bank_probe',),
    )
    cfg.dump(tmp_path / 'ensemble_dist.py')
    cmd.python(
        [
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={free_port}',
            'tools/train.py',
            str(tmp_path / 'ensemble_dist.py'),
            '--launcher',
            'pytorch',
        ],
        env={'PYTHONPATH': osp.pathsep.join([REPO_ROOT, TESTS_DIR])},
        timeout=240,
    )

    ranks = [torch.load(tmp_path / f'probe_rank{r}.pth', weights_only=False) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for rec0, rec1 in zip(*ranks):
        assert sorted(rec0['after']) == sorted(rec1['after']) == BANKS
        union = sorted(set(rec0['indices']) | set(rec1['indices']))
        for name in BANKS:
            for side in (0, 1):  # student bank, teacher bank
                assert torch.equal(rec0['after'][name][side], rec1['after'][name][side]), (
                    name,
                    side,
                )
                changed = (rec0['after'][name][side] != rec0['before'][name][side]).any(1)
                assert changed.nonzero().flatten().tolist() == union, (name, side)
            assert torch.equal(rec0['normalizers'][name], rec1['normalizers'][name])
        # the two teachers' banks are different banks
        assert not torch.equal(rec0['after'][BANKS[0]][1], rec0['after'][BANKS[1]][1])


def test_validation_scores_the_student_and_every_teacher(make_imagefolder, tmp_path, teacher_ckpts):
    data = make_imagefolder(tmp_path / 'data', num_classes=3, per_class=4)
    cfg = multi_teacher_config(data, tmp_path / 'work', paths(teacher_ckpts))
    cfg.merge_from_dict(
        dict(
            val_dataloader=image_folder_loader(data, batch_size=5, shuffle=False),
            val_evaluator=dict(type='mmpretrain.Accuracy', topk=(1,)),
            val_cfg=dict(type='mmrazor.MultiTeacherDistillValLoop'),
        )
    )
    runner = Runner.from_cfg(cfg)
    metrics = runner.val()

    model = runner.model.eval()
    expected = {}
    with torch.no_grad():  # each network's top-1 on the 12 images, computed here
        for key, net in [('accuracy/top1', model.student)] + [
            (f'teacher.{name}.accuracy/top1', model.teachers[name]) for name in TINY_TEACHERS
        ]:
            correct = 0
            for data_batch in runner.val_dataloader:
                batch_data = model.data_preprocessor(data_batch, False)
                labels = torch.stack([s.gt_label for s in batch_data['data_samples']]).flatten()
                correct += int((net(batch_data['inputs'], mode='tensor').argmax(1) == labels).sum())
            expected[key] = 100 * correct / 12
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_the_validation_loop_refuses_a_single_teacher_model(make_imagefolder, tmp_path):
    data = make_imagefolder(tmp_path / 'data')
    cfg = crd_config(data, tmp_path / 'work')
    cfg.merge_from_dict(
        dict(
            val_dataloader=image_folder_loader(data, shuffle=False),
            val_evaluator=dict(type='mmpretrain.Accuracy', topk=(1,)),
            val_cfg=dict(type='mmrazor.MultiTeacherDistillValLoop'),
        )
    )
    with pytest.raises(TypeError, match='validates a MultiTeacherDistill model'):
        Runner.from_cfg(cfg).val()


# ------------------------------------------------------------ the losses inside
def build_model(distiller, ckpts=None):
    """The tiny MultiTeacherDistill as the Runner builds it, a real bank per bank-using loss."""
    init_default_scope('mmrazor')
    cfg = multi_teacher_config('unused', 'unused', ckpts or {}, distiller=distiller)
    model = MODELS.build(cfg.model)
    for ordinal, (_, client) in enumerate(
        (n, m) for n, m in model.named_modules() if hasattr(m, 'bank_requirements')
    ):
        spec = client.bank_requirements()
        client.attach_memory_bank(
            ContrastMemoryBank(
                6,
                spec['feat_dim'],
                spec['momentum'],
                labels=torch.tensor([0, 1, 2, 0, 1, 2]),
                seed=ordinal,
            )
        )
    return model


def batch(model, size=3):
    torch.manual_seed(1)
    data = dict(
        inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(size)],
        data_samples=[
            DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i % 3) for i in range(size)
        ],
    )
    return model.data_preprocessor(data, training=True)


def test_kd_reads_the_mean_of_the_teachers_logits(tmp_path, teacher_ckpts):
    distiller = multi_teacher_distiller()
    for name in TINY_TEACHERS:  # KD alone
        del (
            distiller['distill_losses'][f'loss_crd_{name}'],
            distiller['loss_forward_mappings'][f'loss_crd_{name}'],
        )
    model = build_model(distiller, paths(teacher_ckpts)).eval()
    data = batch(model)
    losses = model(**data, mode='loss')

    with torch.no_grad():  # computed here, independently of the distiller
        teacher_logits = [
            model.teachers[name](data['inputs'], mode='tensor') for name in TINY_TEACHERS
        ]
        student_logits = model.student(data['inputs'], mode='tensor')
    mean = (teacher_logits[0] + teacher_logits[1]) / 2
    assert not torch.allclose(teacher_logits[0], teacher_logits[1])
    assert torch.allclose(
        model.distiller.get_record('logits', False, teacher=['t1', 't2']), mean, atol=1e-6
    )
    tau = 4
    log_p_t = torch.log_softmax(mean / tau, 1)
    kl = (log_p_t.exp() * (log_p_t - torch.log_softmax(student_logits / tau, 1))).sum(
        1
    ).mean() * tau**2
    assert torch.allclose(losses['distill.loss_kd'], kl, atol=1e-6)


def on_teacher(distiller, teacher):
    """A single-teacher ConfigurableDistiller config as a MultiTeacherDistiller of ``teacher``."""
    mappings = {
        loss: {
            arg: dict(info, teacher=teacher) if not info['from_student'] else info
            for arg, info in m.items()
        }
        for loss, m in distiller['loss_forward_mappings'].items()
    }
    return dict(
        distiller,
        type='MultiTeacherDistiller',
        teacher_recorders={teacher: distiller['teacher_recorders']},
        loss_forward_mappings=mappings,
    )


def logits_distiller(loss):
    recorders = dict(logits=dict(type='ModuleOutputs', source='head.fc'))
    args = ('preds_S', 'preds_T') if loss['type'] == 'KLDivergence' else ('s_logits', 't_logits')
    return dict(
        student_recorders=recorders,
        teacher_recorders=recorders,
        distill_losses=dict(loss_x=loss),
        loss_forward_mappings=dict(
            loss_x={
                args[0]: dict(from_student=True, recorder='logits'),
                args[1]: dict(from_student=False, recorder='logits'),
            }
        ),
    )


def dcd_distiller():
    crd = crd_distiller({}, t_width=TINY_TEACHERS['t2'])
    return dict(
        crd,
        distill_losses=dict(loss_dcd=dict(type='DCDLoss')),
        loss_forward_mappings=dict(
            loss_dcd=dict(
                s_embeds=dict(from_student=True, recorder='feat', connector='crd_s'),
                t_embeds=dict(from_student=False, recorder='feat', connector='crd_t'),
            )
        ),
    )


# the repository's single-teacher distillers, read from the second teacher (width 12: reading the
# first one, of width 16, would not fit the teacher heads)
EXISTING = {
    'crd': lambda: crd_distiller({}, t_width=TINY_TEACHERS['t2']),
    'crcd': lambda: crcd_distiller(t_width=TINY_TEACHERS['t2']),
    'dcd': dcd_distiller,
    'ckd': lambda: logits_distiller(dict(type='CKDLoss', loss_weight=10.0)),
    'kd': lambda: logits_distiller(dict(type='KLDivergence', tau=4)),
}


@pytest.mark.parametrize('method', sorted(EXISTING))
def test_every_existing_loss_works_unchanged_inside(method):
    distiller = on_teacher(EXISTING[method](), 't2')
    model = build_model(distiller).train()
    losses = model(**batch(model), mode='loss')
    names = [f'distill.{name}' for name in distiller['distill_losses']]
    assert set(names) <= set(losses)
    total = sum(losses[name] for name in names)
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.parameters())
    assert all(p.grad is None for p in model.teachers.parameters())


# ---------------------------------------------------------------- bad configs
def build_error(cfg, error, runner=False):
    """The message of the error building ``cfg``'s model raises (in a Runner: before training)."""
    with pytest.raises(error) as info:
        if runner:
            Runner.from_cfg(cfg)
        else:
            MODELS.build(cfg.model)
    return str(info.value)


def test_a_loss_naming_a_missing_teacher_is_refused_at_build(
    make_imagefolder, tmp_path, teacher_ckpts
):
    data = make_imagefolder(tmp_path / 'data')
    distiller = multi_teacher_distiller()
    distiller['loss_forward_mappings']['loss_crd_t2']['t_feats']['teacher'] = 't3'
    message = build_error(
        multi_teacher_config(data, tmp_path / 'w1', paths(teacher_ckpts), distiller),
        ValueError,
        runner=True,
    )
    assert "['loss_crd_t2']['t_feats'] names teacher 't3', which does not exist" in message
    assert "['t1', 't2']" in message

    distiller = multi_teacher_distiller()
    distiller['loss_forward_mappings']['loss_kd']['preds_T']['teacher'] = ['t1', 'typo']
    message = build_error(
        multi_teacher_config(data, tmp_path / 'w2', paths(teacher_ckpts), distiller), ValueError
    )
    assert "names teacher 'typo'" in message

    distiller = multi_teacher_distiller()
    del distiller['loss_forward_mappings']['loss_kd']['preds_T']['teacher']
    message = build_error(
        multi_teacher_config(data, tmp_path / 'w3', paths(teacher_ckpts), distiller), ValueError
    )
    assert 'names none: add teacher=' in message

    # recorders for a teacher the algorithm does not have
    distiller = multi_teacher_distiller(teacher_widths=dict(t1=16, t2=12, t3=12))
    message = build_error(
        multi_teacher_config(data, tmp_path / 'w4', paths(teacher_ckpts), distiller), ValueError
    )
    assert "teacher(s) ['t3'], which do not exist" in message

    # a recorder whose source is not in its teacher
    distiller = multi_teacher_distiller()
    distiller['teacher_recorders'] = dict(
        distiller['teacher_recorders'],
        t2=dict(
            feat=dict(type='ModuleOutputs', source='nek'),
            logits=dict(type='ModuleOutputs', source='head.fc'),
        ),
    )
    message = build_error(
        multi_teacher_config(data, tmp_path / 'w5', paths(teacher_ckpts), distiller), ValueError
    )
    assert "teacher 't2': recorder 'feat' (source 'nek') cannot be attached" in message


def test_a_teacher_checkpoint_of_another_model_is_refused_naming_the_teacher(
    make_imagefolder, tmp_path, teacher_ckpts
):
    data = make_imagefolder(tmp_path / 'data')
    swapped = dict(t1=teacher_ckpts['t2'][0], t2=teacher_ckpts['t1'][0])
    message = build_error(
        multi_teacher_config(data, tmp_path / 'work', swapped), ValueError, runner=True
    )
    assert "teacher 't1': the checkpoint " in message and 'does not match its config' in message
    assert (
        'shape mismatches' in message and '(12,) in the checkpoint, (16,) in the model' in message
    )

    other = tmp_path / 'other.pth'  # another kind of model altogether
    torch.save(dict(state_dict=dict(weight=torch.zeros(2))), other)
    message = build_error(
        multi_teacher_config(data, tmp_path / 'work', dict(t1=str(other))), ValueError
    )
    assert (
        "teacher 't1'" in message
        and 'missing keys' in message
        and 'unexpected keys (1): weight' in message
    )

    message = build_error(
        multi_teacher_config(data, tmp_path / 'work', dict(t2=str(tmp_path / 'absent.pth'))),
        FileNotFoundError,
    )
    assert "teacher 't2': checkpoint" in message and 'absent.pth' in message


def test_a_teacher_needs_exactly_one_config_source(tmp_path):
    cfg = multi_teacher_config('unused', tmp_path, {})
    cfg.model.teachers.t1.cfg_path = str(tmp_path / 'absent.py')
    with pytest.raises(ValueError, match="teacher 't1' needs exactly one of cfg="):
        MODELS.build(cfg.model)
    del cfg.model.teachers.t1.cfg
    with pytest.raises(FileNotFoundError, match="teacher 't1': config file .*absent.py' not found"):
        MODELS.build(cfg.model)


def runner_log(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


def test_a_teacher_without_ckpt_is_refused_and_ckpt_none_is_a_warned_random_teacher(
    make_imagefolder, tmp_path, teacher_ckpts
):
    data = make_imagefolder(tmp_path / 'data')
    cfg = multi_teacher_config(data, tmp_path / 'w1', paths(teacher_ckpts))
    del cfg.model.teachers.t2.ckpt  # forgotten, not chosen
    message = build_error(cfg, ValueError, runner=True)
    assert "teacher 't2' has no ckpt" in message
    assert 'model.teachers.t2.ckpt=/path/to/teacher.pth' in message and 'ckpt=None' in message

    cfg = multi_teacher_config(data, tmp_path / 'w2', dict(t1=paths(teacher_ckpts)['t1']))
    assert cfg.model.teachers.t2.ckpt is None  # written explicitly
    runner = Runner.from_cfg(cfg)
    assert "teacher 't2': ckpt=None, so it keeps its random initial weights" in runner_log(runner)
    assert "teacher 't1'" not in runner_log(runner)


def test_ckpt_strict_false_loads_the_tensors_that_fit_with_a_warning(
    make_imagefolder, tmp_path, teacher_ckpts
):
    data = make_imagefolder(tmp_path / 'data')
    path, state = teacher_ckpts['t1']
    # t2's checkpoint without its classifier: a partial load of t2, on purpose
    head = ('head.fc.weight', 'head.fc.bias')
    partial = str(tmp_path / 't2_backbone.pth')
    t2_state = {k: v for k, v in teacher_ckpts['t2'][1].items() if k not in head}
    torch.save(dict(state_dict=t2_state), partial)
    cfg = multi_teacher_config(data, tmp_path / 'work', dict(t1=path, t2=partial))
    message = build_error(cfg, ValueError)
    assert "teacher 't2'" in message and f'missing keys (2): {", ".join(head)}' in message
    assert 'model.teachers.t2.ckpt_strict=False' in message

    cfg.model.teachers.t2.ckpt_strict = False
    runner = Runner.from_cfg(cfg)
    teachers = runner.model.teachers
    for key, value in state.items():
        assert torch.equal(teachers.t1.state_dict()[key], value), key
    for key, value in t2_state.items():
        assert torch.equal(teachers.t2.state_dict()[key], value), key
    log = runner_log(runner)
    assert "teacher 't2': model.teachers.t2.ckpt_strict=False: loaded" in log
    assert f'missing keys (2): {", ".join(head)}' in log
    runner.train()


# ------------------------------------------------------------------- configs
def write_demo_teacher_checkpoints(tmp_path):
    """Checkpoints of the two demo teachers' configs (as their own runs would write, untrained)."""
    ckpts = {}
    for name, config in (('resnet20', 'teacher.py'), ('wrn_16_2', 'teacher_wrn.py')):
        model_cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'demo', config)).model
        ckpts[name] = str(tmp_path / f'{name}.pth')
        write_checkpoint(ckpts[name], model_cfg, seed=0)
    return ckpts


# the demo's own smoke test trains every row; this one checks the teachers' options
@pytest.mark.slow
def test_demo_ensemble_config_trains_through_tools_train(tmp_path, cmd):
    ckpts = write_demo_teacher_checkpoints(tmp_path)
    options = [f'model.teachers.{name}.ckpt={path}' for name, path in ckpts.items()] + [
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        'train_dataloader.dataset.indices=96',
        'val_dataloader.dataset.indices=64',
        'default_hooks.logger.interval=1',
    ]
    out = cmd.python(
        [
            'tools/train.py',
            'configs/demo/ensemble.py',
            '--work-dir',
            tmp_path / 'work',
            '--cfg-options',
            *options,
        ],
        timeout=240,
    )
    last = [line for line in out.splitlines() if 'Epoch(train) [1][2/2]' in line][-1]
    for key in ('distill.loss_kd', 'distill.loss_crd_resnet20', 'distill.loss_crd_wrn_16_2'):
        assert f'{key}:' in last, key
        assert torch.isfinite(torch.tensor(float(last.split(f'{key}:', 1)[1].split()[0])))
    bank_log = [line for line in out.splitlines() if 'CRDMemoryBankHook: 2 bank(s)' in line]
    assert bank_log and all(
        f'distiller.distill_losses.loss_crd_{name}' in bank_log[0] for name in ckpts
    )
    val = [
        line for line in out.splitlines() if 'Epoch(val) [1]' in line and 'accuracy/top1' in line
    ][-1]
    assert all(f'teacher.{name}.accuracy/top1:' in val for name in ckpts), val


def test_docs_show_the_whole_ensemble_config_as_it_is():
    with open(osp.join(REPO_ROOT, 'docs', 'ensembles.md')) as f:
        section = f.read().split('# Ensemble distillation', 1)[1]
    path = section.split('The whole of\n`', 1)[1].split('`', 1)[0]
    shown = section.split('```python\n', 1)[1].split('```', 1)[0]
    with open(osp.join(REPO_ROOT, path)) as f:
        assert shown == f.read(), path
