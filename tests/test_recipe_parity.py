"""The CIFAR-100 recipe shelf matches the papers' tables and the authors' settings.

The tables below are typed in from the papers (via /work/shared/REFERENCE.md)
and from the CKD authors' per-pair configs (ZhouXinzzzzz/CKD,
configs/cifar100/ckd/*.yaml), independently of the recipes and of
configs/README.md, which are checked against them:

* every pair of the CRD paper's CIFAR-100 table has a CRD and a CRD+KD recipe
  with the right teacher and student networks (the feature widths are
  measured by building each network once), the authors' loss weights, learning
  rate and schedule, and a ``teacher_ckpt`` that is the last checkpoint of an
  existing teacher config's run;
* DCD, CRCD and CKD recipes exist for their pairs with their authors' settings
  (CKD: weight, temperature, batch and learning rate per pair, 480 cosine
  epochs; on ImageNet batch 512, lr 0.2, 200 cosine epochs, weight 10);
* every student network has a CE-only baseline (the table's "student" column);
* configs/README.md lists every recipe under configs/ with its published number
  or "—", and its numbers are the papers'.
Config-only: nothing trains here (tests/test_configs.py runs the recipes).
"""

import ast
import functools
import glob
import math
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import crd_mm  # noqa: F401  (registers the backbones)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO_ROOT, 'configs')

# paper name -> (file-name slug, backbone, width of the pooled penultimate feature)
# widths from the CRD paper's networks: resnetD 64, resnet8x4/32x4 256,
# wrn_D_W 64*W, vgg 512, ResNet50 4*512, MobileNetV2 (x0.5) 1280,
# ShuffleNetV1 960, ShuffleNetV2 1024
NETS = {
    'wrn_16_2': ('wrn_16_2', dict(type='CifarWideResNet', arch='wrn_16_2'), 128),
    'wrn_40_1': ('wrn_40_1', dict(type='CifarWideResNet', arch='wrn_40_1'), 64),
    'wrn_40_2': ('wrn_40_2', dict(type='CifarWideResNet', arch='wrn_40_2'), 128),
    'resnet20': ('resnet20', dict(type='CifarResNet', arch='resnet20'), 64),
    'resnet32': ('resnet32', dict(type='CifarResNet', arch='resnet32'), 64),
    'resnet56': ('resnet56', dict(type='CifarResNet', arch='resnet56'), 64),
    'resnet110': ('resnet110', dict(type='CifarResNet', arch='resnet110'), 64),
    'resnet8x4': ('resnet8x4', dict(type='CifarResNet', arch='resnet8x4'), 256),
    'resnet32x4': ('resnet32x4', dict(type='CifarResNet', arch='resnet32x4'), 256),
    'vgg8': ('vgg8', dict(type='CifarVGG', arch='vgg8'), 512),
    'vgg13': ('vgg13', dict(type='CifarVGG', arch='vgg13'), 512),
    'ResNet50': ('resnet50', dict(type='CifarResNet50'), 2048),
    'MobileNetV2': ('mobilenetv2', dict(type='CifarMobileNetV2'), 1280),
    'ShuffleNetV1': ('shufflenetv1', dict(type='CifarShuffleNetV1'), 960),
    'ShuffleNetV2': ('shufflenetv2', dict(type='CifarShuffleNetV2'), 1024),
}
# the CRD, DCD and CKD authors train these students with lr 0.01, all others with 0.05
SMALL_LR_STUDENTS = ('MobileNetV2', 'ShuffleNetV1', 'ShuffleNetV2')
SMALL_LR_BACKBONES = {NETS[name][1]['type'] for name in SMALL_LR_STUDENTS}

# CRD paper, CIFAR-100 top-1: (teacher, student) -> teacher, student, KD, CRD, CRD+KD
CRD_TABLE = {
    ('wrn_40_2', 'wrn_16_2'): ('75.61', '73.26', '74.92', '75.48', '75.64'),
    ('wrn_40_2', 'wrn_40_1'): ('75.61', '71.98', '73.54', '74.14', '74.38'),
    ('resnet56', 'resnet20'): ('72.34', '69.06', '70.66', '71.16', '71.63'),
    ('resnet110', 'resnet20'): ('74.31', '69.06', '70.67', '71.46', '71.56'),
    ('resnet110', 'resnet32'): ('74.31', '71.14', '73.08', '73.48', '73.75'),
    ('resnet32x4', 'resnet8x4'): ('79.42', '72.50', '73.33', '75.51', '75.46'),
    ('vgg13', 'vgg8'): ('74.64', '70.36', '72.98', '73.94', '74.29'),
    ('vgg13', 'MobileNetV2'): ('74.64', '64.60', '67.37', '69.73', '69.94'),
    ('ResNet50', 'MobileNetV2'): ('79.34', '64.60', '67.35', '69.11', '69.54'),
    ('ResNet50', 'vgg8'): ('79.34', '70.36', '73.81', '74.30', '74.58'),
    ('resnet32x4', 'ShuffleNetV1'): ('79.42', '70.50', '74.07', '75.11', '75.12'),
    ('resnet32x4', 'ShuffleNetV2'): ('79.42', '71.82', '74.45', '75.65', '76.05'),
    ('wrn_40_2', 'ShuffleNetV1'): ('75.61', '70.50', '74.83', '76.05', '76.27'),
}
SAME_ARCH = [
    ('wrn_40_2', 'wrn_16_2'),
    ('wrn_40_2', 'wrn_40_1'),
    ('resnet56', 'resnet20'),
    ('resnet110', 'resnet20'),
    ('resnet110', 'resnet32'),
    ('resnet32x4', 'resnet8x4'),
    ('vgg13', 'vgg8'),
]
# DCD paper, CIFAR-100 top-1: DCD, DCD+KD
DCD_TABLE = {
    ('wrn_40_2', 'wrn_16_2'): ('74.99', '76.06'),
    ('resnet56', 'resnet20'): ('71.18', '71.81'),
    ('resnet32x4', 'resnet8x4'): ('74.23', '75.09'),
    ('vgg13', 'vgg8'): ('73.22', '73.95'),
    ('resnet32x4', 'ShuffleNetV2'): ('75.26', '76.95'),
    ('ResNet50', 'MobileNetV2'): ('67.39', '70.03'),
}
# CKD authors' configs: CL_WEIGHT, TEMPERATURE, BATCH_SIZE, LR (SGD 0.9, wd 5e-4, 480 cosine epochs)
CKD_AUTHORS = {
    ('resnet110', 'resnet32'): (10.0, 1.0, 64, 0.05),
    ('resnet56', 'resnet20'): (10.0, 1.0, 64, 0.05),
    ('resnet32x4', 'resnet8x4'): (100.0, 1.0, 64, 0.05),
    ('vgg13', 'vgg8'): (100.0, 1.0, 64, 0.05),
    ('wrn_40_2', 'wrn_16_2'): (100.0, 1.0, 64, 0.05),
    ('wrn_40_2', 'wrn_40_1'): (50.0, 2.0, 32, 0.05),
    ('vgg13', 'MobileNetV2'): (50.0, 2.0, 32, 0.01),
    ('ResNet50', 'MobileNetV2'): (100.0, 1.0, 32, 0.01),
    ('resnet32x4', 'ShuffleNetV1'): (100.0, 1.0, 32, 0.01),
    ('resnet32x4', 'ShuffleNetV2'): (100.0, 1.0, 64, 0.01),
    ('wrn_40_2', 'ShuffleNetV1'): (100.0, 1.0, 32, 0.01),
}
# ImageNet ResNet-34 -> ResNet-18, published top-1(/top-5) per method; '—' where we have none
IMAGENET = {
    'crd': '71.17/90.13',
    'crd-kd': '71.38/90.49',
    'crcd': '71.96',
    'dcd': '—',
    'dcd-kd': '—',
    'ckd': '—',
}
# the CRD paper's loss on CIFAR-100: weight, temperature, negatives, momentum, embedding size
CRD_KEYS = ('type', 'loss_weight', 'temperature', 'num_negatives', 'momentum', 'feat_dim')
CRD_PAPER = dict(zip(CRD_KEYS, ('CRDLoss', 0.8, 0.07, 16384, 0.5, 128)))
TEACHERS = sorted({t for t, _ in CRD_TABLE})
STUDENTS = sorted({s for _, s in CRD_TABLE})


def slug(pair):
    return f'{NETS[pair[0]][0]}_{NETS[pair[1]][0]}'


def recipe(method, pair):
    return f'configs/{method.split("-")[0]}/cifar100/{method}_{slug(pair)}_cifar100.py'


def teacher_config(name):
    return f'configs/cifar100_teachers/{NETS[name][0]}_cifar100.py'


@functools.cache
def load(path):
    """A recipe's config, parsed once per session (teacher configs are shared by many recipes)."""
    return Config.fromfile(osp.join(REPO_ROOT, path))


@pytest.fixture(scope='module')
def measured_widths():
    """Each network of the table built once: the channels of its last feature map for CIFAR."""
    from mmpretrain.registry import MODELS

    init_default_scope('mmpretrain')
    widths = {}
    with torch.no_grad():
        for name, (_, backbone, _) in NETS.items():
            net = MODELS.build(backbone)
            net.eval()
            widths[name] = net(torch.zeros(1, 3, 32, 32))[-1].shape[1]
    return widths


def test_the_table_has_the_papers_pairs():
    assert len(CRD_TABLE) == 13 and len(SAME_ARCH) == 7
    cross = [p for p in CRD_TABLE if p not in SAME_ARCH]
    assert len(cross) == 6 and all(p in CRD_TABLE for p in SAME_ARCH)
    assert set(DCD_TABLE) <= set(CRD_TABLE) and set(CKD_AUTHORS) <= set(CRD_TABLE)


def test_network_widths_are_the_built_networks(measured_widths):
    assert measured_widths == {name: width for name, (_, _, width) in NETS.items()}


def check_networks(cfg, pair):
    """Student and teacher networks and widths, and a teacher_ckpt of an existing teacher config."""
    teacher, student = pair
    model = cfg.model
    assert model.type == 'SingleTeacherDistill'
    for net, name in ((model.architecture, student), (model.teacher, teacher)):
        assert net.type == 'ImageClassifier'
        assert dict(net.backbone) == NETS[name][1], (name, net.backbone)
        assert net.head.in_channels == NETS[name][2] and net.head.num_classes == 100
    teacher_cfg_path = teacher_config(teacher)
    assert osp.exists(osp.join(REPO_ROOT, teacher_cfg_path)), teacher_cfg_path
    teacher_cfg = load(teacher_cfg_path)
    assert dict(teacher_cfg.model.backbone) == dict(model.teacher.backbone)
    # tools/train.py's default work_dir is work_dirs/<config name>; the run's last checkpoint
    epochs = teacher_cfg.train_cfg.max_epochs
    assert epochs % teacher_cfg.default_hooks.checkpoint.interval == 0
    stem = osp.splitext(osp.basename(teacher_cfg_path))[0]
    assert model.teacher_ckpt == f'work_dirs/{stem}/epoch_{epochs}.pth'


def connector_widths(cfg):
    connectors = cfg.model.distiller.connectors
    return connectors.crd_s.dim_in, connectors.crd_t.dim_in


def check_cifar_optimiser(cfg, student, lr=None, batch=64):
    opt = cfg.optim_wrapper.optimizer
    expected_lr = lr if lr is not None else (0.01 if student in SMALL_LR_STUDENTS else 0.05)
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ('SGD', expected_lr, 0.9, 5e-4)
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.train_dataloader.dataset.type == 'CIFAR100'


def check_step_schedule(cfg, epochs):
    assert cfg.train_cfg.max_epochs == epochs
    sched = cfg.param_scheduler
    assert (sched.type, list(sched.milestones), sched.gamma) == (
        'MultiStepLR',
        [150, 180, 210],
        0.1,
    )


def check_kd(cfg, weight):
    losses = cfg.model.distiller.distill_losses
    if weight is None:
        assert 'loss_kd' not in losses
    else:
        kd = losses.loss_kd
        assert (kd.type, kd.tau, kd.loss_weight) == ('KLDivergence', 4, weight)
        assert cfg.model.distiller.loss_forward_mappings.loss_kd.preds_S.recorder == 'logits'


@pytest.mark.parametrize('pair', list(CRD_TABLE), ids=slug)
def test_crd_and_crd_kd_recipes_for_every_pair(pair):
    for method, kd_weight in (('crd', None), ('crd-kd', 1.0)):
        cfg = load(recipe(method, pair))
        check_networks(cfg, pair)
        assert connector_widths(cfg) == (NETS[pair[1]][2], NETS[pair[0]][2])
        crd = cfg.model.distiller.distill_losses.loss_crd
        assert {k: crd[k] for k in CRD_PAPER} == CRD_PAPER
        assert cfg.model.architecture.head.loss.loss_weight == 1.0  # CE gamma 1
        check_kd(cfg, kd_weight)
        check_cifar_optimiser(cfg, pair[1])
        check_step_schedule(cfg, 240)
        assert [h.type for h in cfg.custom_hooks] == ['CRDMemoryBankHook']


@pytest.mark.parametrize('pair', list(DCD_TABLE), ids=slug)
def test_dcd_and_dcd_kd_recipes_for_the_dcd_papers_pairs(pair):
    for method, kd_weight in (('dcd', None), ('dcd-kd', 1.0)):
        cfg = load(recipe(method, pair))
        check_networks(cfg, pair)
        assert connector_widths(cfg) == (NETS[pair[1]][2], NETS[pair[0]][2])
        dcd = cfg.model.distiller.distill_losses.loss_dcd
        assert (dcd.type, dcd.loss_weight, dcd.consistency_weight) == ('DCDLoss', 1.0, 0.5)
        check_kd(cfg, kd_weight)
        check_cifar_optimiser(cfg, pair[1])
        check_step_schedule(cfg, 240)


@pytest.mark.parametrize('pair', list(CRD_TABLE), ids=slug)
def test_crcd_recipes_for_every_pair(pair):
    cfg = load(recipe('crcd', pair))
    check_networks(cfg, pair)
    student_width, teacher_width = NETS[pair[1]][2], NETS[pair[0]][2]
    assert connector_widths(cfg) == (student_width, teacher_width)
    losses = cfg.model.distiller.distill_losses
    assert (losses.loss_crcd_grad.student_channels, losses.loss_crcd_grad.teacher_channels) == (
        student_width,
        teacher_width,
    )
    for name in ('loss_crcd', 'loss_crcd_grad'):
        assert (losses[name].loss_weight, losses[name].num_negatives, losses[name].temperature) == (
            1.0,
            500,
            0.05,
        )
    check_kd(cfg, 0.9)
    check_cifar_optimiser(cfg, pair[1])
    check_step_schedule(cfg, 250)  # distillation stops for the last 10 epochs
    assert [h.stop_epoch for h in cfg.custom_hooks if h.type == 'StopDistillHook'] == [240]


def lr_at_epochs(cfg, epochs):
    """The learning rate the recipe's param_scheduler gives at the start of each epoch.

    It is computed by mmengine's own schedulers.
    """
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS

    init_default_scope('mmengine')
    wrapper = build_optim_wrapper(
        torch.nn.Linear(1, 1),
        dict(
            type='OptimWrapper',
            optimizer=dict(cfg.optim_wrapper.optimizer, _scope_=None, type='SGD'),
        ),
    )
    sched_cfg = dict(cfg.param_scheduler)
    sched_cfg.pop('_scope_', None)
    scheduler = PARAM_SCHEDULERS.build(
        sched_cfg, default_args=dict(optimizer=wrapper, epoch_length=1)
    )
    lrs = {}
    for epoch in range(max(epochs) + 1):
        if epoch in epochs:
            lrs[epoch] = wrapper.optimizer.param_groups[0]['lr']
        scheduler.step()
    return lrs


def cosine(lr, epoch, total):
    return lr * (1 + math.cos(math.pi * epoch / total)) / 2


@pytest.mark.parametrize('pair', list(CKD_AUTHORS), ids=slug)
def test_ckd_recipes_use_the_authors_settings_per_pair(pair):
    weight, temperature, batch, lr = CKD_AUTHORS[pair]
    cfg = load(recipe('ckd', pair))
    check_networks(cfg, pair)
    ckd = cfg.model.distiller.distill_losses
    assert set(ckd) == {'loss_ckd'}
    assert (ckd.loss_ckd.type, ckd.loss_ckd.loss_weight, ckd.loss_ckd.temperature) == (
        'CKDLoss',
        weight,
        temperature,
    )
    check_cifar_optimiser(cfg, pair[1], lr=lr, batch=batch)
    assert cfg.train_cfg.max_epochs == 480
    assert cfg.param_scheduler.type == 'CosineAnnealingLR'
    lrs = lr_at_epochs(cfg, [0, 120, 240, 479])
    for epoch, value in lrs.items():
        assert value == pytest.approx(cosine(lr, epoch, 480), abs=1e-9), epoch


def test_ckd_imagenet_recipe_uses_the_authors_schedule():
    cfg = load('configs/ckd/ckd_resnet34_resnet18_in1k.py')
    ckd = cfg.model.distiller.distill_losses.loss_ckd
    assert (ckd.loss_weight, ckd.temperature) == (10.0, 1.0)
    assert 'loss_kd' not in cfg.model.distiller.distill_losses
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.2, 0.9, 1e-4)
    # batch 512 in total: 8 GPUs x 64 (tools/dist_train.sh ... 8); --auto-scale-lr counts from 512
    assert cfg.train_dataloader.batch_size * 8 == 512 and cfg.auto_scale_lr.base_batch_size == 512
    assert cfg.train_cfg.max_epochs == 200
    lrs = lr_at_epochs(cfg, [0, 50, 100, 199])
    for epoch, value in lrs.items():
        assert value == pytest.approx(cosine(0.2, epoch, 200), abs=1e-9), epoch
    assert cfg.model.teacher.backbone.depth == 34 and cfg.model.architecture.backbone.depth == 18


# ---------------------------------------------------------------- recipes as deltas
def assigned_names(path):
    """The top-level names a config file assigns, read from its syntax tree."""
    with open(osp.join(REPO_ROOT, path), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}


def test_the_network_table_has_the_papers_networks_and_widths():
    """configs/_base_/models/cifar_networks.py, the one place the recipes take networks from."""
    table = Config.fromfile(
        osp.join(CONFIGS, '_base_', 'models', 'cifar_networks.py')
    ).cifar_networks.to_dict()
    expected = {
        slug: dict(backbone=backbone, head=dict(in_channels=width))
        for slug, backbone, width in NETS.values()
    }
    assert table == expected


@pytest.mark.parametrize('method', ['crd', 'dcd', 'crcd', 'ckd'])
def test_cifar_recipes_say_only_what_differs_over_their_methods_base(method):
    """A pair's recipe inherits one base and sets only its networks, widths, checkpoint, batch.

    Its "+KD" twin inherits it and the KD distiller and sets only the model's distiller.
    """
    paths = sorted(
        osp.relpath(p, REPO_ROOT)
        for p in glob.glob(osp.join(CONFIGS, method, 'cifar100', f'{method}*_cifar100.py'))
    )
    assert paths
    for path in paths:
        cfg_base = Config._get_base_files(osp.join(REPO_ROOT, path))
        name = osp.basename(path)
        if name.startswith(f'{method}-kd_'):
            twin = name.replace(f'{method}-kd_', f'{method}_', 1)
            assert cfg_base == [f'./{twin}', '../../_base_/distillers/kd.py'], path
            assert assigned_names(path) == {'_base_', 'model'}, path
        else:
            model = load(path).model
            # the authors' lr 0.01 for these students is set once, in the *_mobile_student.py base
            small = model.architecture.backbone.type in SMALL_LR_BACKBONES
            suffix = '_mobile_student' if small else ''
            assert cfg_base == [f'../../_base_/recipes/cifar100_{method}{suffix}.py'], path
            assert assigned_names(path) <= {'_base_', 'model', 'train_dataloader'}, path
            table = load(path).cifar_networks
            assert model.architecture.backbone in [n.backbone for n in table.values()], path
            assert model.teacher.backbone in [n.backbone for n in table.values()], path


def test_the_four_cifar_methods_share_one_distillation_skeleton():
    """cifar_{crd,dcd,crcd,ckd}_distill.py differ from cifar_distill.py only by their distiller."""
    models = osp.join(CONFIGS, '_base_', 'models')
    skeleton = Config.fromfile(osp.join(models, 'cifar_distill.py')).model.to_dict()
    assert skeleton['type'] == 'SingleTeacherDistill' and skeleton['teacher_ckpt'] is None
    for method in ('crd', 'dcd', 'crcd', 'ckd'):
        model = Config.fromfile(osp.join(models, f'cifar_{method}_distill.py')).model.to_dict()
        distiller = model.pop('distiller')
        assert model == skeleton, method
        assert distiller['type'] == 'ConfigurableDistiller', method


@pytest.mark.parametrize('student', STUDENTS)
def test_every_student_has_a_ce_only_baseline(student):
    cfg = load(f'configs/cifar100_students/{NETS[student][0]}_cifar100.py')
    model = cfg.model
    assert model.type == 'ImageClassifier' and dict(model.backbone) == NETS[student][1]
    assert model.head.in_channels == NETS[student][2] and model.head.num_classes == 100
    assert model.head.loss == dict(type='CrossEntropyLoss', loss_weight=1.0)
    check_cifar_optimiser(cfg, student)
    check_step_schedule(cfg, 240)
    assert not cfg.get('custom_hooks')


# ---------------------------------------------------------------- configs/README.md
def readme_rows():
    """{config path: its cell under 'paper'} of each row of configs/README.md linking a config."""
    rows, paper_col = {}, None
    with open(osp.join(CONFIGS, 'README.md'), encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line.startswith('|'):
                paper_col = None
                continue
            cells = [c.strip() for c in line.strip('|').split('|')]
            if paper_col is None:  # a table's header
                paper_col = cells.index('paper') if 'paper' in cells else -1
                continue
            links = re.findall(r'\]\(([^)]+\.(?:py|yaml))\)', cells[0])
            for link in links if paper_col >= 0 else []:  # a recipe, and maybe its YAML twin
                path = osp.normpath(osp.join('configs', link))
                assert path not in rows, f'{path} is listed twice'
                rows[path] = cells[paper_col]
    return rows


def recipe_files():
    paths = []
    for ext in ('py', 'yaml', 'yml'):
        paths += glob.glob(osp.join(CONFIGS, '**', f'*.{ext}'), recursive=True)
    rel = sorted(osp.relpath(p, REPO_ROOT) for p in paths)
    # bases are not recipes; the demo's configs are documented with their numbers in docs/demo.md;
    # each folder's metafile.yml is the model index of its recipes (tests/test_metafiles.py)
    return [
        p
        for p in rel
        if p.split(osp.sep)[1] not in ('_base_', 'demo') and osp.basename(p) != 'metafile.yml'
    ]


def expected_number(path):
    """The published number of a recipe, from the tables above; '—' where none is known."""
    parts = path.split(osp.sep)
    name = osp.splitext(parts[-1])[0]
    if parts[1] == 'cifar100_teachers':
        return CRD_TABLE[next(p for p in CRD_TABLE if NETS[p[0]][0] + '_cifar100' == name)][0]
    if parts[1] == 'cifar100_students':
        return CRD_TABLE[next(p for p in CRD_TABLE if NETS[p[1]][0] + '_cifar100' == name)][1]
    if len(parts) == 4 and parts[2] == 'cifar100':
        method, rest = name.split('_', 1)
        pair = next(p for p in CRD_TABLE if slug(p) + '_cifar100' == rest)
        if method in ('crd', 'crd-kd'):
            return CRD_TABLE[pair][3 if method == 'crd' else 4]
        if method in ('dcd', 'dcd-kd'):
            return DCD_TABLE[pair][0 if method == 'dcd' else 1]
        return '—'  # CRCD, CKD: the papers' CIFAR-100 tables could not be retrieved
    if name.endswith('resnet34_resnet18_in1k') and parts[1] in ('crd', 'dcd', 'crcd', 'ckd'):
        return IMAGENET['crd' if name == 'resnet34_resnet18_in1k' else name.split('_', 1)[0]]
    return '—'  # ensembles, cross-modal and detection recipes: no published number for these setups


def test_the_readmes_expectations_cover_every_recipe_of_the_tables():
    paths = recipe_files()
    for pair in CRD_TABLE:
        for method in ('crd', 'crd-kd', 'crcd'):
            assert recipe(method, pair) in paths
    for pair in DCD_TABLE:
        assert recipe('dcd', pair) in paths and recipe('dcd-kd', pair) in paths
    for pair in CKD_AUTHORS:
        assert recipe('ckd', pair) in paths
    assert expected_number(recipe('crd-kd', ('ResNet50', 'vgg8'))) == '74.58'
    assert expected_number('configs/cifar100_students/wrn_40_1_cifar100.py') == '71.98'
    assert expected_number('configs/cifar100_teachers/resnet110_cifar100.py') == '74.31'


def test_readme_lists_every_recipe_with_its_published_number():
    rows = readme_rows()
    for path in rows:
        assert osp.exists(osp.join(REPO_ROOT, path)), (
            f'configs/README.md links a missing config: {path}'
        )
    missing = []
    for path in recipe_files():
        twin = osp.splitext(path)[0] + '.py'  # a YAML recipe may share its Python twin's row
        listed = (
            path
            if path in rows
            else twin
            if path.endswith(('.yaml', '.yml')) and twin in rows
            else None
        )
        if listed is None:
            missing.append(path)
            continue
        assert rows[listed] == expected_number(listed), (listed, rows[listed])
    assert not missing, f'not listed in configs/README.md: {missing}'
