"""A teacher checkpoint that does not fit its network stops the run before any training.

mmrazor's ``SingleTeacherDistill`` (and every algorithm built on it:
``FpnTeacherDistill``, crd_mm's ``CrossModalDistill`` and
``FpnRoITeacherDistill``) loaded ``teacher_ckpt`` with ``strict=False``, so a
checkpoint of another network left random layers behind a warning. The
checkpoints here are real files written from the tiny teacher's own config:
one whose classifier was trained for another number of classes (wrong
shapes), one without the classifier (missing keys) and one that fits. The
expected shapes and keys are derived from how each file is made.
"""

import os
import os.path as osp

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner
from tiny_configs import crd_config, tiny_classifier

from crd_mm.utils.teacher_check import TeacherCheckpointMismatchError

TEACHER_WIDTH = 16  # crd_config's teacher: tiny_classifier(16), 10 classes, 2 * 16 pooled channels
HEAD = ('head.fc.weight', 'head.fc.bias')
OTHER_CLASSES = 5


def fitting_state(seed=0):
    """A state dict of the teacher's own config, moved away from any fresh initialisation."""
    torch.manual_seed(seed)
    init_default_scope('mmrazor')
    state = MODELS.build(tiny_classifier(TEACHER_WIDTH)).state_dict()
    return {
        k: v + 0.05 + 0.05 * torch.rand_like(v) if v.is_floating_point() else v
        for k, v in state.items()
    }


def save(path, state):
    torch.save(dict(state_dict=state, meta=dict()), path)
    return str(path)


@pytest.fixture
def checkpoints(tmp_path):
    """name -> (path, state) of three teacher checkpoints: fits, wrong_shape, missing."""
    state = fitting_state()
    # the same teacher trained for another number of classes: its classifier has other shapes
    wrong = dict(state)
    wrong['head.fc.weight'] = torch.randn(OTHER_CLASSES, 2 * TEACHER_WIDTH)
    wrong['head.fc.bias'] = torch.randn(OTHER_CLASSES)
    # a backbone-only checkpoint: no classifier at all
    missing = {k: v for k, v in state.items() if k not in HEAD}
    return {
        name: (save(tmp_path / f'{name}.pth', s), s)
        for name, s in (('fits', state), ('wrong_shape', wrong), ('missing', missing))
    }


def config(data, work_dir, ckpt, **model):
    cfg = crd_config(data, work_dir)
    cfg.model.teacher_ckpt = ckpt
    cfg.model.update(model)
    return cfg


def assert_teacher_holds(teacher, state, skip=()):
    own = teacher.state_dict()
    for key, value in state.items():
        if key not in skip:
            assert torch.equal(own[key], value), key


def log_text(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


@pytest.mark.slow  # a tools/train.py process (about 35 s here); the Runner tests below are fast
def test_train_stops_before_training_naming_the_keys_and_the_teacher_config(
    make_imagefolder, tmp_path, checkpoints, cmd
):
    data = make_imagefolder(tmp_path / 'data')
    ckpt = checkpoints['wrong_shape'][0]
    config_file = tmp_path / 'distill.py'
    config(data, tmp_path / 'unused', ckpt).dump(str(config_file))
    work_dir = tmp_path / 'work'
    out = cmd.python(
        ['tools/train.py', config_file, '--work-dir', work_dir], timeout=240, check=False
    )
    assert 'TeacherCheckpointMismatchError' in out, out[-3000:]
    assert f"the checkpoint '{ckpt}' (model.teacher_ckpt) does not match its config" in out
    classes = tiny_classifier(TEACHER_WIDTH)['head']['num_classes']
    assert (
        'shape mismatches (2): '
        f'head.fc.weight: ({OTHER_CLASSES}, {2 * TEACHER_WIDTH}) in the checkpoint, '
        f'({classes}, {2 * TEACHER_WIDTH}) in the model, '
        f'head.fc.bias: ({OTHER_CLASSES},) in the checkpoint, ({classes},) in the model'
    ) in out
    # the teacher config, with what shapes its weights (a dumped config sorts its keys)
    described = out.split('(model.teacher = ', 1)[1].split('\n', 1)[0]
    assert described.startswith('ImageClassifier(')
    for part in ('backbone=ResNet(', 'depth=18', 'head=LinearClsHead(', f'num_classes={classes}'):
        assert part in described, described
    assert '--cfg-options model.teacher_ckpt_strict=False' in out
    # nothing was trained
    assert 'Epoch(train)' not in out
    assert not [f for _, _, files in os.walk(work_dir) for f in files if f.endswith('.pth')]


def test_missing_keys_stop_the_runner(make_imagefolder, tmp_path, checkpoints):
    data = make_imagefolder(tmp_path / 'data')
    ckpt = checkpoints['missing'][0]
    with pytest.raises(TeacherCheckpointMismatchError) as info:
        Runner.from_cfg(config(data, tmp_path / 'work', ckpt))
    message = str(info.value)
    assert f'missing keys (2): {", ".join(HEAD)}' in message
    assert 'unexpected keys' not in message and 'shape mismatches' not in message


def test_a_fitting_checkpoint_trains_with_the_checkpoints_teacher(
    make_imagefolder, tmp_path, checkpoints
):
    data = make_imagefolder(tmp_path / 'data')
    path, state = checkpoints['fits']
    runner = Runner.from_cfg(config(data, tmp_path / 'work', path))
    runner.train()
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
    assert_teacher_holds(runner.model.teacher, state)  # frozen: still the checkpoint's
    assert 'teacher_ckpt_strict' not in log_text(runner)


def test_teacher_ckpt_strict_false_loads_what_fits_with_a_warning(
    make_imagefolder, tmp_path, checkpoints
):
    data = make_imagefolder(tmp_path / 'data')
    path, state = checkpoints['wrong_shape']
    runner = Runner.from_cfg(config(data, tmp_path / 'work', path, teacher_ckpt_strict=False))
    teacher = runner.model.teacher
    assert_teacher_holds(teacher, state, skip=HEAD)
    assert teacher.head.fc.weight.shape == (10, 2 * TEACHER_WIDTH)
    log = log_text(runner)
    assert 'model.teacher_ckpt_strict=False: loaded' in log
    assert 'shape mismatches (2): head.fc.weight' in log
    runner.train()
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')


def test_teacher_ckpt_strict_must_be_a_bool(tmp_path, checkpoints):
    cfg = config('unused', tmp_path, checkpoints['fits'][0], teacher_ckpt_strict='no')
    init_default_scope('mmrazor')
    with pytest.raises(TypeError, match='model.teacher_ckpt_strict must be True or False'):
        MODELS.build(cfg.model)


def algorithm_model(kind, ckpt):
    """The tiny CRD model as ``kind`` (an algorithm built on SingleTeacherDistill)."""
    model = config('unused', 'unused', ckpt).model
    model.type = kind
    if kind == 'CrossModalDistill':
        model.teacher_data_preprocessor = dict(
            type='mmpretrain.ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3
        )
    if kind == 'FpnRoITeacherDistill':
        model.distiller.student_recorders.rois = dict(type='ModuleInputs', source='neck')
    return model


@pytest.mark.parametrize(
    'kind',
    ['SingleTeacherDistill', 'FpnTeacherDistill', 'CrossModalDistill', 'FpnRoITeacherDistill'],
)
def test_every_single_teacher_algorithm_refuses_a_checkpoint_that_does_not_fit(kind, checkpoints):
    init_default_scope('mmrazor')
    for name in ('wrong_shape', 'missing'):
        with pytest.raises(TeacherCheckpointMismatchError, match='does not match its config'):
            MODELS.build(algorithm_model(kind, checkpoints[name][0]))
    if kind != 'FpnRoITeacherDistill':  # that one needs a two-stage detector as its teacher
        path, state = checkpoints['fits']
        assert_teacher_holds(MODELS.build(algorithm_model(kind, path)).teacher, state)


def test_the_message_names_the_recipe_that_wrote_the_checkpoint(tmp_path, checkpoints):
    """A checkpoint below work_dirs/<recipe name>/ was written by that recipe (tools/train.py)."""
    recipe = 'resnet110_cifar100'
    run_dir = tmp_path / 'work_dirs' / recipe
    run_dir.mkdir(parents=True)
    ckpt = save(run_dir / 'epoch_240.pth', checkpoints['wrong_shape'][1])
    init_default_scope('mmrazor')
    with pytest.raises(TeacherCheckpointMismatchError) as info:
        MODELS.build(config('unused', 'unused', ckpt).model)
    assert f'configs/cifar100_teachers/{recipe}.py' in str(info.value)
