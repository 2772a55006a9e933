"""``crd_mm::<path>`` in ``_base_`` resolves to the recipes shipped with the imported crd_mm.

The main test (slow) installs crd_mm non-editable into a temporary folder,
writes a user config in another temporary folder that inherits a ``crd_mm::``
recipe and overrides it, and loads it there in a fresh interpreter that
imports the installed copy. The default suite does the same in this process,
with the crd_mm this process imports. The expected model, data and schedule
are the repository's recipe read directly by its file path, plus the user's
overrides.
"""

import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap

import pytest
from mmengine.config import Config

import crd_mm
from crd_mm import compat

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RECIPE = 'crd/cifar100/crd_resnet56_resnet20_cifar100.py'
COMPARED = (
    'model',
    'train_dataloader',
    'val_dataloader',
    'optim_wrapper',
    'param_scheduler',
    'train_cfg',
    'custom_hooks',
    'default_scope',
)
# not copied into the source tree that is installed
NOT_SOURCES = {
    '.git',
    '.venv',
    'work_dirs',
    'data',
    'build',
    'dist',
    '.pytest_cache',
    '.mim',
    '__pycache__',
}

USER_CONFIG = f"""\
_base_ = ['crd_mm::{RECIPE}']
# my run: a shorter schedule, and no teacher checkpoint (the model is only built)
train_cfg = dict(max_epochs=3)
model = dict(teacher_ckpt=None)
"""

LOAD = """\
import json, sys
import crd_mm
from crd_mm import compat
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

cfg = Config.fromfile('my_crd.py')
init_default_scope(cfg.default_scope)
model = MODELS.build(cfg.model)
print('RESULT', json.dumps(dict(
    crd_mm=crd_mm.__file__,
    recipe=compat.resolve_package_config({recipe!r}),
    cfg={{key: cfg.get(key) for key in {compared!r}}},
    marker=cfg.get('installed_copy_marker'),
    built=[type(model).__name__, type(model.student.backbone).__name__,
           len(model.teacher.backbone.layer1), len(model.student.backbone.layer1)])))
"""


def expected_config():
    """The repository's recipe, read by its path, with the user's overrides applied by hand."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', RECIPE))
    expected = {key: cfg.get(key) for key in COMPARED}
    expected = json.loads(json.dumps(expected))  # what the subprocess's JSON holds
    expected['train_cfg']['max_epochs'] = 3
    expected['model']['teacher_ckpt'] = None
    return expected


def copy_sources(dst):
    shutil.copytree(
        REPO_ROOT,
        dst,
        symlinks=True,
        ignore=lambda folder, names: [
            n for n in names if n in NOT_SOURCES or n.endswith('.egg-info')
        ],
    )


@pytest.mark.slow  # about 22 s of CPU here: pip install, then a fresh interpreter imports crd_mm
def test_crd_mm_scope_from_a_non_editable_install(tmp_path):
    src, site, user = tmp_path / 'src', tmp_path / 'site', tmp_path / 'user'
    copy_sources(src)
    subprocess.run(
        [
            sys.executable,
            '-m',
            'pip',
            'install',
            '--no-deps',
            '--no-build-isolation',
            '--no-compile',
            '-q',
            '--target',
            str(site),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    shipped = site / 'crd_mm' / '.mim' / 'configs' / RECIPE
    assert shipped.is_file() and not shipped.is_symlink()
    # a line only the installed copy has: proves which file the config came from
    with open(shipped, 'a') as f:
        f.write('\ninstalled_copy_marker = True\n')

    user.mkdir()
    (user / 'my_crd.py').write_text(USER_CONFIG)
    (user / 'load.py').write_text(LOAD.format(recipe=RECIPE, compared=COMPARED))
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'CUDA_VISIBLE_DEVICES')}
    env.update(PYTHONPATH=str(site), CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'load.py'], cwd=user, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split('RESULT ', 1)[1])

    assert result['crd_mm'] == str(site / 'crd_mm' / '__init__.py')  # not the editable checkout
    assert result['recipe'] == str(shipped)
    assert result['marker'] is True
    assert result['cfg'] == expected_config()
    # CIFAR ResNet-(6n+2) has n blocks per stage: resnet56 teacher, resnet20 student
    assert result['built'] == ['SingleTeacherDistill', 'CifarResNet', (56 - 2) // 6, (20 - 2) // 6]


def test_crd_mm_scope_in_process_from_a_temporary_folder(tmp_path):
    """The imported crd_mm's recipes (here the checkout's, through crd_mm/.mim or configs/)."""
    (tmp_path / 'my_crd.py').write_text(USER_CONFIG)
    cfg = Config.fromfile(str(tmp_path / 'my_crd.py'))
    got = json.loads(json.dumps({key: cfg.get(key) for key in COMPARED}))
    assert got == expected_config()
    # inherited as a plain file: no `_scope_` added where the recipe has none
    assert '_scope_' not in cfg.train_cfg and '_scope_' not in cfg.custom_hooks[0]
    assert osp.samefile(
        compat.resolve_package_config(RECIPE), osp.join(REPO_ROOT, 'configs', RECIPE)
    )
    assert 'mmengine.config.Config._get_cfg_path' in compat.APPLIED_PATCHES
    assert crd_mm.__version__


def test_unknown_crd_mm_recipe_names_the_closest(tmp_path):
    (tmp_path / 'typo.py').write_text(
        "_base_ = ['crd_mm::crd/cifar100/crd_resnet56_resnet2_cifar100.py']\n"
    )
    with pytest.raises(
        FileNotFoundError,
        match=r'crd_mm::crd/cifar100/crd_resnet56_resnet2_cifar100\.py: '
        r'no such config in .*closest recipes: crd_mm::crd/cifar100/'
        r'crd_resnet56_resnet20_cifar100\.py',
    ):
        Config.fromfile(str(tmp_path / 'typo.py'))


def test_other_package_scopes_still_resolve(tmp_path):
    (tmp_path / 'cls.py').write_text("_base_ = ['mmpretrain::_base_/models/resnet18.py']\n")
    cfg = Config.fromfile(str(tmp_path / 'cls.py'))
    assert cfg.model.backbone.depth == 18 and cfg.model._scope_ == 'mmpretrain'


@pytest.mark.slow
def test_train_tool_resolves_crd_mm_scope_from_another_directory(cmd, tmp_path):
    """tools/train.py run from a user's folder: crd_mm:: resolves, the run trains and saves."""
    (tmp_path / 'my_student.py').write_text(
        textwrap.dedent("""\
        _base_ = ['crd_mm::demo/student.py']
        train_cfg = dict(max_epochs=1)
        """)
    )
    env = cmd.env()
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), 'my_student.py'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / 'work_dirs' / 'my_student' / 'epoch_1.pth').is_file()
