"""Packaging for crd_mm; configs, tools and the model index ship as ``crd_mm/.mim``."""

import os
import shutil

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_requirements(name):
    path = os.path.join(HERE, 'requirements', name)
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


def version():
    scope = {}
    with open(os.path.join(HERE, 'crd_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def link_mim_files():
    """Expose configs/, tools/ and model-index.yml under crd_mm/.mim (OpenMMLab's mim layout).

    ``mim train/test/run crd_mm`` look for the scripts in ``.mim/tools`` and for a config given by
    name under the package; ``mim search crd_mm`` reads ``.mim/model-index.yml``, whose imports
    (``configs/*/metafile.yml``) resolve against ``.mim/configs``. Editable installs get a
    symlink, regular builds a copy, as mmpretrain and mmdet do.
    """
    mim_dir = os.path.join(HERE, 'crd_mm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in ('configs', 'tools', 'model-index.yml'):
        src, dst = os.path.join(HERE, name), os.path.join(mim_dir, name)
        if os.path.islink(dst) or os.path.isfile(dst):
            os.remove(dst)
        elif os.path.isdir(dst):
            shutil.rmtree(dst)
        if 'develop' in os.sys.argv or 'editable_wheel' in os.sys.argv:
            os.symlink(os.path.relpath(src, mim_dir), dst)
        elif os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


link_mim_files()
setup(
    name='crd_mm',
    version=version(),
    description='Contrastive representation distillation (CRD, DCD, CRCD, CKD) for mmrazor',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    include_package_data=True,
    package_data={'crd_mm': ['.mim/configs/**/*', '.mim/tools/**/*', '.mim/model-index.yml']},
    python_requires='>=3.9',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    zip_safe=False,
)
