"""From distiller to deployable student: tools/model_converters/ and crd_mm.utils.export.

The distillation runs are real: the demo's configs (configs/demo/) trained for
two short epochs on scikit-learn's digits by mmengine's Runner, and one of
mmrazor's detection recipes (configs/detection/) for two iterations on a tiny
COCO set (slow suite). Their students are exported and then loaded the way a
user loads any model: mmpretrain's ``init_model`` and
``ImageClassificationInferencer``, ``tools/test.py``, mmdet's
``init_detector``.
"""

import copy
import glob
import hashlib
import importlib.util
import json
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import crd_mm  # noqa: F401  (patches the stack, registers crd_mm's modules)
from crd_mm.utils.export import export_student, student_config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
METRIC = 'accuracy/top1'
# two epochs of the students' 100 images (2 iterations each), validated after each epoch
TINY = {
    'train_cfg.max_epochs': 2,
    'train_cfg.val_interval': 1,
    'param_scheduler.T_max': 2,
    'log_level': 'WARNING',
}
# teachers stay randomly initialised: what matters here is the student's way out
NO_TEACHER_CKPT = {
    'configs/demo/crd_kd.py': {'model.teacher_ckpt': None},
    'configs/demo/crossmodal.py': {'model.teacher_ckpt': None},
    'configs/demo/ensemble.py': {
        'model.teachers.resnet20.ckpt': None,
        'model.teachers.wrn_16_2.ckpt': None,
    },
}


def load_tool(name, path):
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO_ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DemoRun:
    """A trained run of a demo config: work dir, dumped config, last checkpoint, logged metrics."""

    def __init__(self, config, work_dir):
        cfg = Config.fromfile(osp.join(REPO_ROOT, config))
        cfg.merge_from_dict({**TINY, **NO_TEACHER_CKPT[config]})
        cfg.work_dir = str(work_dir)
        cfg.experiment_name = f'test_export_{osp.basename(str(work_dir))}'
        runner = Runner.from_cfg(cfg)
        runner.train()
        self.work_dir = str(work_dir)
        self.config = osp.join(self.work_dir, osp.basename(config))  # what the run dumped
        with open(osp.join(self.work_dir, 'last_checkpoint')) as f:
            self.checkpoint = f.read().strip()
        log = osp.join(self.work_dir, runner.timestamp, 'vis_data', f'{runner.timestamp}.json')
        with open(log) as f:
            self.validations = [r for r in map(json.loads, f) if METRIC in r]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Demo runs trained on first use, once per module."""
    trained = {}

    def get(config):
        if config not in trained:
            name = osp.splitext(osp.basename(config))[0]
            trained[config] = DemoRun(config, tmp_path_factory.mktemp(name))
        return trained[config]

    return get


@pytest.fixture(scope='module')
def crd_kd(runs):
    return runs('configs/demo/crd_kd.py')


def exported_pair(run, out_dir, name='student'):
    return export_student(Config.fromfile(run.config), run.checkpoint, str(out_dir), name=name)


@pytest.mark.parametrize(
    'config',
    [
        'configs/demo/crd_kd.py',  # SingleTeacherDistill
        pytest.param('configs/demo/ensemble.py', marks=pytest.mark.slow),  # MultiTeacherDistill
        pytest.param('configs/demo/crossmodal.py', marks=pytest.mark.slow),  # CrossModalDistill
    ],
)
def test_exported_student_tests_exactly_as_the_distillers_student_did(config, runs, tmp_path, cmd):
    """tools/test.py on the exported pair gives the top-1 the distiller logged for its student."""
    run = runs(config)
    config_file, checkpoint_file = exported_pair(run, tmp_path / 'export')
    assert sorted(os.listdir(tmp_path / 'export')) == ['student.pth', 'student.py']

    exported = Config.fromfile(config_file)
    assert exported.model.type == 'ImageClassifier' and exported.default_scope == 'mmpretrain'
    for key in ('teacher', 'teachers', 'distiller', 'architecture', 'teacher_ckpt'):
        assert key not in exported.model
    assert 'Distill' not in exported.pretty_text  # no algorithm, no distill loop
    assert 'custom_hooks' not in exported and 'optim_wrapper' not in exported
    assert exported.custom_imports.imports == ['crd_mm']  # CifarResNet, SklearnDigits
    distiller_cfg = Config.fromfile(run.config)
    assert exported.model.backbone == distiller_cfg.model.architecture.backbone
    assert exported.model.data_preprocessor == distiller_cfg.data_preprocessor

    checkpoint = torch.load(checkpoint_file, map_location='cpu')
    assert sorted(checkpoint) == ['meta', 'state_dict']
    source = torch.load(run.checkpoint, map_location='cpu')
    expected = {
        k[len('architecture.') :]: v
        for k, v in source['state_dict'].items()
        if k.startswith('architecture.')
    }
    assert sorted(checkpoint['state_dict']) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(checkpoint['state_dict'][key], value), key
    assert checkpoint['meta']['epoch'] == source['meta']['epoch'] == 2
    assert checkpoint['meta']['dataset_meta'] == source['meta']['dataset_meta']

    metrics_file = tmp_path / 'metrics.json'
    cmd.python(
        [
            'tools/test.py',
            config_file,
            checkpoint_file,
            '--work-dir',
            tmp_path / 'test',
            '--out',
            metrics_file,
            '--out-item',
            'metrics',
        ],
        timeout=300,
    )
    with open(metrics_file) as f:
        tested = json.load(f)[METRIC]
    (last,) = [r for r in run.validations if r['step'] == checkpoint['meta']['epoch']]
    assert tested == last[METRIC]


def test_exported_classifier_loads_in_mmpretrain_and_the_inferencer_predicts_as_the_student(
    crd_kd, tmp_path
):
    """init_model loads every weight (nothing missing, nothing unexpected); the inferencer's
    predictions are the distiller's student's on the same test digits."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, MODELS
    from mmpretrain import ImageClassificationInferencer
    from mmpretrain.apis import init_model

    config_file, checkpoint_file = exported_pair(crd_kd, tmp_path)
    model = init_model(config_file, checkpoint_file, device='cpu')
    state = torch.load(checkpoint_file, map_location='cpu')['state_dict']
    assert sorted(model.state_dict()) == sorted(state)
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key

    # the distiller's student on the first 8 test digits, through the distiller's own test data
    distiller_cfg = Config.fromfile(crd_kd.config)
    distiller_cfg.model.teacher_ckpt = None
    # as the Runner builds it: the config's top-level data_preprocessor is the algorithm's
    distiller_cfg.model.data_preprocessor = distiller_cfg.data_preprocessor
    with DefaultScope.overwrite_default_scope('mmrazor'):
        distiller = MODELS.build(distiller_cfg.model)
    distiller.load_state_dict(torch.load(crd_kd.checkpoint, map_location='cpu')['state_dict'])
    distiller.eval()
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(distiller_cfg.test_dataloader.dataset)
    batch = pseudo_collate([dataset[i] for i in range(8)])
    with torch.no_grad():
        expected = [s.pred_score for s in distiller.test_step(batch)]

    images = [dataset.get_data_info(i)['img'] for i in range(8)]
    # mmpretrain's scope, as in a fresh process (not the mmrazor scope of this process's Runners)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(
            config_file, pretrained=checkpoint_file, device='cpu'
        )
        results = inferencer(images)
    for result, scores in zip(results, expected):
        np.testing.assert_allclose(result['pred_scores'], scores.numpy(), rtol=1e-5, atol=1e-6)
        assert result['pred_label'] == int(scores.argmax())
        assert result['pred_class'] == str(int(scores.argmax()))  # SklearnDigits' class names


def test_exported_checkpoint_loads_with_weights_only_and_no_crd_mm(crd_kd, tmp_path, cmd):
    """A deployment need not import crd_mm (nor allow-list anything) to read the weights."""
    _, checkpoint_file = exported_pair(crd_kd, tmp_path)
    out = cmd.python(
        [
            '-c',
            'import sys, torch; c = torch.load(sys.argv[1], weights_only=True); '
            "print(sorted(c), len(c['state_dict']), 'crd_mm' in sys.modules)",
            checkpoint_file,
        ]
    )
    state = torch.load(checkpoint_file, map_location='cpu')['state_dict']
    assert out.split()[-4:] == ["['meta',", "'state_dict']", str(len(state)), 'False']


def test_crossmodal_student_gets_its_own_view_pipeline():
    """The exported cross-modal student reads the 4x4 view alone, as the student alone does."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/crossmodal.py'))
    alone = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/crossmodal_student.py'))
    assert any(t.type == 'TeacherView' for t in cfg.test_dataloader.dataset.pipeline)
    exported = student_config(cfg)
    for split in ('val', 'test'):
        pipeline = exported[f'{split}_dataloader'].dataset.pipeline
        assert pipeline == alone[f'{split}_dataloader'].dataset.pipeline
    assert exported.model == dict(alone.model, data_preprocessor=alone.data_preprocessor)


def test_bad_inputs_are_refused_with_what_to_do(crd_kd, tmp_path):
    student_only = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/student.py'))
    with pytest.raises(ValueError, match='not a distiller.*publish_model.py'):
        student_config(student_only)
    # the checkpoint of another student (resnet20 instead of resnet8) does not fit
    other = Config.fromfile(crd_kd.config)
    other.model.architecture.backbone.arch = 'resnet20'
    with pytest.raises(ValueError, match='missing keys .*Is the checkpoint from a run'):
        export_student(other, crd_kd.checkpoint, str(tmp_path / 'other'))
    assert not osp.exists(tmp_path / 'other')  # nothing written
    # a checkpoint of a network trained alone holds no student
    torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(1)}}, tmp_path / 'alone.pth')
    with pytest.raises(KeyError, match="no 'architecture.\\*' weights"):
        export_student(Config.fromfile(crd_kd.config), str(tmp_path / 'alone.pth'), str(tmp_path))


def test_convert_tool_writes_one_config_and_one_checkpoint(crd_kd, tmp_path, cmd):
    out = cmd.python(
        [
            'tools/model_converters/convert_to_student.py',
            crd_kd.config,
            crd_kd.checkpoint,
            tmp_path / 'out',
        ]
    )
    assert sorted(os.listdir(tmp_path / 'out')) == ['crd_kd_student.pth', 'crd_kd_student.py']
    assert f'tools/test.py {tmp_path}/out/crd_kd_student.py' in out
    in_memory = exported_pair(crd_kd, tmp_path / 'ref', 'crd_kd_student')
    with open(in_memory[0]) as f, open(tmp_path / 'out' / 'crd_kd_student.py') as g:
        assert f.read() == g.read()


def test_publish_strips_training_state_and_names_the_file_by_its_sha256(crd_kd, tmp_path, cmd):
    source = torch.load(crd_kd.checkpoint, map_location='cpu')
    # what a training checkpoint of a CRD run carries besides the weights
    for key in ('optimizer', 'message_hub', 'param_schedulers', 'crd_memory_banks'):
        assert key in source, key
    out = cmd.python(
        ['tools/model_converters/publish_model.py', crd_kd.checkpoint, tmp_path / 'crd_kd.pth']
    )
    (published,) = glob.glob(str(tmp_path / 'crd_kd-*.pth'))
    assert sorted(os.listdir(tmp_path)) == [osp.basename(published)]
    digits = re.fullmatch(r'crd_kd-([0-9a-f]{8})\.pth', osp.basename(published)).group(1)
    with open(published, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest()[:8] == digits
    assert f'published: {published}' in out
    checkpoint = torch.load(published, map_location='cpu', weights_only=True)
    assert sorted(checkpoint) == ['meta', 'state_dict']
    assert sorted(checkpoint['state_dict']) == sorted(source['state_dict'])
    for key, value in source['state_dict'].items():
        assert torch.equal(checkpoint['state_dict'][key], value), key
    assert checkpoint['meta']['epoch'] == source['meta']['epoch']


def test_publish_refuses_an_output_name_without_pth(crd_kd, tmp_path):
    from crd_mm.utils.export import publish_checkpoint

    with pytest.raises(ValueError, match='must end with .pth'):
        publish_checkpoint(crd_kd.checkpoint, str(tmp_path / 'model.ckpt'))


def test_demo_ends_with_the_exported_student_predicting_test_digits(crd_kd, tmp_path, capsys):
    """The demo's last step: the convert command it prints is what it runs, and the inferencer
    it prints the snippet of gives the predictions it prints."""
    demo = load_tool('demo', 'tools/demo.py')
    out_dir = str(tmp_path / 'student')
    examples = demo.export_and_predict(crd_kd.work_dir, crd_kd.checkpoint, out_dir, 4)
    printed = capsys.readouterr().out
    convert, snippet = demo.export_commands(
        crd_kd.work_dir, crd_kd.checkpoint, out_dir, examples[0][0]
    )
    assert convert in printed and snippet.splitlines()[1] in printed
    assert len(snippet.splitlines()) == 3
    assert sorted(os.listdir(out_dir)) == ['crd_kd_student.pth', 'crd_kd_student.py', 'digits']

    # the snippet, run as a user would, classifies the first image as the demo printed
    namespace = {}
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # as in a fresh process
        exec('\n'.join(snippet.splitlines()[:2]), namespace)
        first = namespace['inferencer'](examples[0][0])[0]
    assert first['pred_class'] == examples[0][2]['pred_class']

    from crd_mm.datasets import SklearnDigits

    image_path = demo.display_path
    test_split = SklearnDigits(split='test', pipeline=[])
    for i, (image, label, result) in enumerate(examples):
        assert label == test_split.get_data_info(i)['gt_label']
        (row,) = [
            line.split() for line in printed.splitlines() if line.split()[:1] == [image_path(image)]
        ]
        assert row[1:3] == [str(label), result['pred_class']]


# ------------------------------------------------------------------- detection (slow suite)


@pytest.mark.slow  # a RetinaNet student and its ResNeXt-101 teacher, 2 iterations on CPU
def test_detection_student_loads_in_mmdet_and_finds_the_distillers_boxes(tmp_path, cmd):
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from mmdet.apis import inference_detector, init_detector
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint
    from test_detection import CRD_CONFIG, offline_torch_home, train_options, write_tiny_coco

    data_root = str(tmp_path / 'coco')
    write_tiny_coco(data_root)
    work_dir = str(tmp_path / 'work')
    cmd.python(
        [
            'tools/train.py',
            CRD_CONFIG,
            '--cfg-options',
            *train_options(data_root, work_dir),
            'default_hooks.checkpoint.save_last=True',
        ],
        env=dict(TORCH_HOME=offline_torch_home(tmp_path, CRD_CONFIG)),
        timeout=600,
    )
    run_config = osp.join(work_dir, osp.basename(CRD_CONFIG))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        run_checkpoint = f.read().strip()
    config_file, checkpoint_file = export_student(
        Config.fromfile(run_config), run_checkpoint, str(tmp_path / 'export'), name='retinanet'
    )
    assert sorted(os.listdir(tmp_path / 'export')) == ['retinanet.pth', 'retinanet.py']
    exported = Config.fromfile(config_file)
    assert exported.model.type == 'RetinaNet' and exported.default_scope == 'mmdet'
    assert 'custom_imports' not in exported  # nothing of crd_mm in a RetinaNet

    student = init_detector(config_file, checkpoint_file, device='cpu')
    state = torch.load(checkpoint_file, map_location='cpu')['state_dict']
    assert sorted(student.state_dict()) == sorted(state)

    distiller_cfg = Config.fromfile(run_config)
    distiller_cfg.model.teacher_ckpt = None
    with DefaultScope.overwrite_default_scope('mmrazor'):
        distiller = MODELS.build(copy.deepcopy(distiller_cfg.model))
    load_checkpoint(distiller, run_checkpoint, map_location='cpu', strict=True)
    distiller.cfg = distiller_cfg  # inference_detector reads the test pipeline from it
    distiller.eval()
    # a barely trained detector scores below the configs' 0.05 threshold: keep every box
    for head in (student.bbox_head, distiller.student.bbox_head):
        head.test_cfg['score_thr'] = 0.0
    image = osp.join(data_root, 'images', '000001.png')
    ours = inference_detector(student, image).pred_instances
    theirs = inference_detector(distiller, image).pred_instances
    assert len(theirs.bboxes) > 0
    torch.testing.assert_close(ours.bboxes, theirs.bboxes, rtol=0, atol=0)
    torch.testing.assert_close(ours.scores, theirs.scores, rtol=0, atol=0)
    assert torch.equal(ours.labels, theirs.labels)
