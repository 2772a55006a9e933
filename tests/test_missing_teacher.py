"""A recipe run before its teacher exists stops before anything is built, naming its config.

The expected commands are derived here from the repository's layout (the
teacher config's path and ``tools/train.py``'s default work dir,
``work_dirs/<config name>``), not from the checker's output.
"""

import glob
import os
import os.path as osp

import pytest
from mmengine.config import Config

from crd_mm.utils.teacher_check import MissingTeacherError, check_teachers, teacher_checkpoints

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
RECIPE = 'configs/crd/cifar100/crd_resnet56_resnet20_cifar100.py'
TEACHER = 'configs/cifar100_teachers/resnet56_cifar100.py'
CIFAR_ENSEMBLE = 'configs/ensemble/crd-kd_resnet56-wrn_40_2-vgg13_resnet20_cifar100.py'
DEMO_ENSEMBLE = 'configs/demo/ensemble.py'


def recipe(path):
    return Config.fromfile(osp.join(REPO_ROOT, path))


def test_train_stops_before_building_and_names_the_teacher_config(cmd, tmp_path):
    ckpt = recipe(RECIPE).model.teacher_ckpt
    if osp.exists(osp.join(REPO_ROOT, ckpt)):
        pytest.skip(f'{ckpt} exists in this checkout: the recipe is runnable here')
    # the checkpoint the message will promise: the teacher config's last epoch
    # in tools/train.py's default work dir
    teacher = recipe(TEACHER)
    assert 'work_dir' not in teacher
    assert ckpt == f'work_dirs/resnet56_cifar100/epoch_{teacher.train_cfg.max_epochs}.pth'

    work_dir = tmp_path / 'run'
    proc = cmd.start(['python', 'tools/train.py', RECIPE, '--work-dir', work_dir])
    out = cmd.wait(proc, check=False)
    assert proc.returncode != 0
    assert 'MissingTeacherError' in out, out[-3000:]
    assert f"model.teacher_ckpt = '{ckpt}' does not exist" in out
    assert f'teacher config {TEACHER}' in out
    assert f'\n    python tools/train.py {TEACHER}\n' in out  # nothing to add: default work dir
    assert '--cfg-options model.teacher_ckpt=/path/to/teacher.pth' in out
    # stopped before the Runner: it would have created the work dir and logged
    assert not work_dir.exists()
    assert 'can not be found' not in out


def test_multi_teacher_recipe_names_each_teachers_config(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    cfg = recipe(CIFAR_ENSEMBLE)
    names = list(cfg.model.teachers)
    assert names == ['resnet56', 'wrn_40_2', 'vgg13']
    if any(osp.exists(spec.ckpt) for spec in cfg.model.teachers.values()):
        pytest.skip('a CIFAR-100 teacher checkpoint exists in this checkout')
    with pytest.raises(MissingTeacherError) as info:
        check_teachers(cfg, train_tool=TRAIN)
    message = str(info.value)
    assert message.startswith('3 teacher checkpoint(s) of ')
    for name in names:
        teacher = f'configs/cifar100_teachers/{name}_cifar100.py'
        assert osp.isfile(teacher)
        assert f"model.teachers.{name}.ckpt = 'work_dirs/{name}_cifar100/epoch_240.pth'" in message
        assert f'\n    python tools/train.py {teacher}\n' in message
        assert f'--cfg-options model.teachers.{name}.ckpt=/path/to/teacher.pth' in message


def test_teacher_cfg_path_and_work_dir_from_another_directory(monkeypatch, tmp_path):
    """The demo's teachers are trained with --work-dir work_dirs/demo/<name>; run from elsewhere."""
    monkeypatch.chdir(tmp_path)  # the recipe's relative checkpoints do not exist here
    cfg = recipe(DEMO_ENSEMBLE)
    with pytest.raises(MissingTeacherError) as info:
        check_teachers(cfg, train_tool=TRAIN)
    message = str(info.value)
    for name, config in (('resnet20', 'teacher'), ('wrn_16_2', 'teacher_wrn')):
        # absolute paths: the repository is not below the current directory
        command = (
            f'python {TRAIN} {REPO_ROOT}/configs/demo/{config}.py '
            f'--work-dir work_dirs/demo/{config}'
        )
        assert f'\n    {command}\n' in message, message
        assert f'model.teachers.{name}.ckpt=/path/to/teacher.pth' in message


def test_single_teacher_found_by_path_below_work_dirs(monkeypatch, tmp_path):
    """work_dirs/demo/teacher/epoch_N.pth -> configs/demo/teacher.py (matched by folder path)."""
    monkeypatch.chdir(tmp_path)
    cfg = recipe('configs/demo/kd.py')
    assert osp.dirname(cfg.model.teacher_ckpt) == 'work_dirs/demo/teacher'
    teacher = osp.join(REPO_ROOT, 'configs', 'demo', 'teacher.py')
    with pytest.raises(MissingTeacherError) as info:
        check_teachers(cfg, train_tool=TRAIN)
    assert f'teacher config {teacher};' in str(info.value)
    assert f'\n    python {TRAIN} {teacher} --work-dir work_dirs/demo/teacher\n' in str(info.value)


def test_urls_existing_files_and_no_teacher_pass(tmp_path):
    imagenet = recipe('configs/crd/resnet34_resnet18_in1k.py')
    assert imagenet.model.teacher_ckpt.startswith('https://')
    check_teachers(imagenet)  # released weights: not checked here
    demo = recipe('configs/demo/kd.py')
    ckpt = tmp_path / 'teacher.pth'
    ckpt.write_bytes(b'')
    demo.merge_from_dict({'model.teacher_ckpt': str(ckpt)})
    check_teachers(demo)
    check_teachers(recipe('configs/demo/student.py'))
    assert teacher_checkpoints(recipe('configs/demo/student.py').model) == []


def test_folder_outside_work_dirs_named_after_a_config(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = recipe(RECIPE)
    cfg.merge_from_dict({'model.teacher_ckpt': 'runs/resnet56_cifar100/last.pth'})
    teacher = osp.join(REPO_ROOT, TEACHER)
    with pytest.raises(MissingTeacherError) as info:
        check_teachers(cfg, train_tool=TRAIN)
    assert f'Its folder is named after the config {teacher};' in str(info.value)
    assert f'\n    python {TRAIN} {teacher} --work-dir runs/resnet56_cifar100\n' in str(info.value)


def test_no_producing_config_still_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = recipe(RECIPE)
    cfg.merge_from_dict({'model.teacher_ckpt': 'work_dirs/my_own_teacher/best.pth'})
    with pytest.raises(MissingTeacherError) as info:
        check_teachers(cfg, train_tool=TRAIN)
    message = str(info.value)
    assert 'is named after its folder' in message
    assert f'python {TRAIN} <teacher config> --work-dir work_dirs/my_own_teacher' in message
    assert '--cfg-options model.teacher_ckpt=/path/to/teacher.pth' in message


@pytest.mark.slow
def test_train_multi_teacher_and_test_tool_stop_with_the_message(cmd, tmp_path):
    missing = tmp_path / 'work_dirs' / 'demo' / 'teacher_wrn' / 'epoch_1.pth'
    proc = cmd.start(
        [
            'python',
            'tools/train.py',
            DEMO_ENSEMBLE,
            '--work-dir',
            tmp_path / 'run',
            '--cfg-options',
            f'model.teachers.wrn_16_2.ckpt={missing}',
        ]
    )
    out = cmd.wait(proc, check=False)
    assert proc.returncode != 0 and 'MissingTeacherError' in out, out[-3000:]
    assert (
        f'\n    python tools/train.py configs/demo/teacher_wrn.py --work-dir {missing.parent}\n'
        in out
    )
    assert not (tmp_path / 'run').exists()

    proc = cmd.start(
        [
            'python',
            'tools/test.py',
            'configs/demo/kd.py',
            tmp_path / 'kd.pth',
            '--work-dir',
            tmp_path / 'test',
            '--cfg-options',
            f'model.teacher_ckpt={tmp_path}/work_dirs/demo/teacher/epoch_1.pth',
        ]
    )
    out = cmd.wait(proc, check=False)
    assert proc.returncode != 0 and 'MissingTeacherError' in out, out[-3000:]
    assert 'python tools/train.py configs/demo/teacher.py --work-dir' in out
    assert 'model.teacher_ckpt=None' in out


@pytest.mark.slow
def test_every_recipes_local_teacher_has_a_config(monkeypatch, tmp_path):
    """Each local teacher checkpoint of the shipped recipes is traced to an existing config."""
    monkeypatch.chdir(tmp_path)
    recipes = [
        p
        for p in glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
        if f'{os.sep}_base_{os.sep}' not in p and not osp.basename(p).startswith('_')
    ]
    checked = 0
    for path in recipes:
        cfg = Config.fromfile(path)
        local = [t for t in teacher_checkpoints(cfg.get('model')) if '://' not in t.path]
        if not local:
            continue
        with pytest.raises(MissingTeacherError) as info:
            check_teachers(cfg, train_tool=TRAIN)
        assert 'is named after its folder' not in str(info.value), (path, str(info.value))
        checked += 1
    assert checked >= 20
