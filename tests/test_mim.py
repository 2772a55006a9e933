"""``mim train/test/run/search crd_mm`` work from any directory on an installed crd_mm.

openmim (a runtime requirement) finds an installed codebase's files in ``<package>/.mim``:
``mim train`` / ``mim test`` run ``.mim/tools/train.py`` / ``test.py`` and, when CONFIG is not a
path that exists, search the package for a file of that name (exactly one must match);
``mim run crd_mm NAME`` runs ``.mim/tools/**/NAME.py``; ``mim search crd_mm`` reads
``.mim/model-index.yml``. setup.py links (editable install) or copies (regular install) configs/,
tools/ and model-index.yml there.

The default suite checks that layout in the checkout's ``crd_mm/.mim`` with mim's own lookups.
The slow test installs crd_mm (regular, non-editable) into a temporary folder and runs the whole
path with mim's command line from another temporary directory: ``mim search``, train a distiller
of the offline demo for one epoch, test its checkpoint, export the student with
``mim run crd_mm convert_to_student`` and test the exported student, which must predict what the
distiller predicted.

openmim 0.3.9 looks for the package in the directory that holds its metadata: a PEP 660
editable install leaves nothing there, so ``make install`` makes the legacy kind (an egg-link to
the checkout, setuptools < 80), whose metadata sits beside the package. A second slow test runs
the same mim path on that editable install, from another directory.
"""

import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import mmengine
import pytest
import torch
import yaml
from mim.utils import get_installed_path, recursively_find
from modelindex.load_model_index import load

import crd_mm

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the demo's CRD+KD distiller on scikit-learn's digits: offline data, seconds per epoch on CPU
DEMO = 'crd_kd.py'
# not copied into the source tree that the regular install is built from
NOT_SOURCES = {'.git', '.venv', 'work_dirs', 'data', 'build', 'dist', '.pytest_cache', '.mim'}


def indexed_configs():
    """Every config of the model index, as paths relative to the repository root."""
    with open(osp.join(REPO_ROOT, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    configs = []
    for metafile in imports:
        with open(osp.join(REPO_ROOT, metafile)) as f:
            configs += [m['Config'] for m in yaml.safe_load(f)['Models']]
    return configs


def mim_env(pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'CUDA_VISIBLE_DEVICES')}
    env.update(CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    if pythonpath:
        env['PYTHONPATH'] = str(pythonpath)
    return env


def mim(args, cwd, env, timeout=600):
    """Run ``python -m mim ARGS`` in ``cwd``; fail with its output unless it exits with 0."""
    proc = subprocess.run(
        [sys.executable, '-m', 'mim', *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'mim {" ".join(map(str, args))} failed:\n{out[-4000:]}'
    return out


def test_package_layout_that_mim_reads():
    """What mim looks up in an installed crd_mm, checked in the checkout's crd_mm/.mim."""
    pkg_root = osp.dirname(crd_mm.__file__)
    mim_dir = osp.join(pkg_root, '.mim')
    for script in ('train.py', 'test.py'):  # mim train / mim test
        assert osp.samefile(
            osp.join(mim_dir, 'tools', script), osp.join(REPO_ROOT, 'tools', script)
        )
    # `mim run crd_mm NAME` searches .mim/tools/ for NAME.py
    for name in ('convert_to_student.py', 'print_config.py'):
        found = recursively_find(osp.join(mim_dir, 'tools') + os.sep, name)
        assert len(found) == 1, f'{name}: {found}'
    # `mim train crd_mm NAME` finds a recipe by its file name: exactly one file may match
    for config in indexed_configs():
        found = recursively_find(pkg_root, osp.basename(config), followlinks=True)
        assert len(found) == 1, f'`mim train crd_mm {osp.basename(config)}` would find {found}'
        assert osp.samefile(found[0], osp.join(REPO_ROOT, config))
    # `mim search crd_mm` loads .mim/model-index.yml; its imports resolve inside .mim
    index = load(osp.join(mim_dir, 'model-index.yml'))
    index.build_models_with_collections()
    assert sorted(m.config for m in index.models) == sorted(indexed_configs())
    for model in index.models:
        assert osp.isfile(osp.join(mim_dir, model.config)), model.config


def test_mim_finds_the_installed_package_and_its_mim_folder():
    """mim's lookup lands on the package Python imports, editable (make install) or regular."""
    pkg_root = get_installed_path('crd_mm')
    assert osp.samefile(pkg_root, osp.dirname(crd_mm.__file__)), pkg_root
    assert osp.isfile(osp.join(pkg_root, '.mim', 'tools', 'train.py')), f'{pkg_root} has no .mim'


def train_test_export(cwd, env, installed_root):
    """Train DEMO for one epoch, test it, export its student and test that, all through mim.

    Args:
        cwd (Path): An empty directory to run in; the runs' files are written there.
        env (dict): The environment of the mim commands.
        installed_root (Path): The crd_mm package folder mim should take everything from.
    """
    no_teacher = ['--cfg-options', 'model.teacher_ckpt=None']  # a random teacher: no checkpoint
    out = mim(
        ['train', 'crd_mm', DEMO, '--work-dir', 'train', *no_teacher, 'train_cfg.max_epochs=1'],
        cwd,
        env,
    )
    command = re.search(r'Training command is (.+?)\. ?$', out, re.M).group(1).split()
    script, config = command[1], command[2]
    assert osp.samefile(script, installed_root / '.mim' / 'tools' / 'train.py')
    assert osp.samefile(config, installed_root / '.mim' / 'configs' / 'demo' / DEMO)
    checkpoint = cwd / 'train' / 'epoch_1.pth'
    assert checkpoint.is_file()

    mim(
        ['test', 'crd_mm', DEMO, '--checkpoint', checkpoint, '--work-dir', 'test', *no_teacher]
        + ['--out', 'distiller.pkl'],
        cwd,
        env,
    )
    out = mim(
        ['run', 'crd_mm', 'convert_to_student', cwd / 'train' / DEMO, checkpoint, 'student'],
        cwd,
        env,
    )
    script = re.search(r'Use the script (\S+) for command convert_to_student', out).group(1)
    assert osp.samefile(
        script, installed_root / '.mim' / 'tools' / 'model_converters' / 'convert_to_student.py'
    )
    exported = sorted(os.listdir(cwd / 'student'))
    assert len(exported) == 2 and exported[0].endswith('.pth') and exported[1].endswith('.py')
    # a config path that exists is used as it is
    mim(
        ['test', 'crd_mm', f'student/{exported[1]}', '--checkpoint', f'student/{exported[0]}']
        + ['--work-dir', 'test_student', '--out', 'student.pkl'],
        cwd,
        env,
    )
    # the exported student is the distiller's student: the same prediction for every test image
    distiller, student = (
        {int(p['sample_idx']): p for p in mmengine.load(cwd / f'{name}.pkl')}
        for name in ('distiller', 'student')
    )
    assert sorted(student) == sorted(distiller) and len(student) > 100
    for idx, pred in student.items():
        assert torch.allclose(pred['pred_score'], distiller[idx]['pred_score'], atol=1e-6), idx


@pytest.mark.slow  # pip install, then five mim commands (each starts the OpenMMLab stack): minutes
@pytest.mark.timeout(1800)  # 5.5 min measured on 2 busy cores; pytest.ini's 600 s is too tight
def test_mim_search_train_test_convert_from_any_directory_regular_install(tmp_path):
    src, site, run = tmp_path / 'src', tmp_path / 'site', tmp_path / 'run'
    shutil.copytree(
        REPO_ROOT,
        src,
        symlinks=True,
        ignore=lambda folder, names: [
            n for n in names if n in NOT_SOURCES or n.endswith('.egg-info') or n == '__pycache__'
        ],
    )
    subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation']
        + ['--no-compile', '-q', '--target', str(site), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = site / 'crd_mm'
    assert (installed / '.mim' / 'model-index.yml').is_file(), 'model-index.yml is not packaged'
    assert not (installed / '.mim' / 'configs').is_symlink()
    run.mkdir()
    env = mim_env(pythonpath=site)
    # mim takes the copy in `site`, not the editable checkout; asked from `run`, as every mim
    # command below: from the checkout, `python -c` would put it (and its egg-info) first
    found = subprocess.run(
        [sys.executable, '-c', 'from mim.utils import get_installed_path as g; print(g("crd_mm"))'],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert osp.samefile(found, installed)
    out = mim(['search', 'crd_mm', '--field', 'config'], run, env)
    for config in (
        'configs/crd/cifar100/crd_resnet56_resnet20_cifar100.py',
        'configs/ckd/ckd_resnet34_resnet18_in1k.py',
    ):
        assert config in out
    train_test_export(run, env, installed)


@pytest.mark.slow  # four mim commands, each starting the OpenMMLab stack
@pytest.mark.timeout(1800)
def test_mim_train_test_convert_from_any_directory_editable_install(tmp_path):
    """The same path on this environment's editable install (what make install makes)."""
    from pathlib import Path

    installed = Path(osp.dirname(crd_mm.__file__))
    assert osp.samefile(get_installed_path('crd_mm'), installed)
    train_test_export(tmp_path, mim_env(), installed)
