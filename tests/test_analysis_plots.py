"""tools/analysis/{logit_correlation,embedding_tsne,plot_curves}.py on tiny real trainings.

The networks are the demo's.

One module-scoped fixture trains, in real mmengine Runners, the demo's
student alone (2 epochs, then resumed for a 3rd: two runs in one work dir)
and the student distilled with KD (2 epochs, an untrained teacher) on a
subset of the digits. The tools then run as a user runs them, on the configs
the Runners dumped into the work dirs and the checkpoints they saved, and
every number they plot is checked against values computed here: the logits
and features of the trained networks the Runners still hold, run over the
test split in this process, and the json logs read line by line.
"""

import copy
import json
import os
import os.path as osp
import shutil
import signal
import sys
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CORRELATION = 'tools/analysis/logit_correlation.py'
TSNE = 'tools/analysis/embedding_tsne.py'
CURVES = 'tools/analysis/plot_curves.py'
NUM_TEST = 48

# 64 training images in batches of 16 (4 logged iterations per epoch), 48 test images
TINY = {
    'train_cfg.max_epochs': 2,
    'train_cfg.val_interval': 1,
    'param_scheduler.T_max': 3,
    'train_dataloader.dataset.indices': 64,
    'train_dataloader.batch_size': 16,
    'val_dataloader.dataset.indices': NUM_TEST,
    'test_dataloader.dataset.indices': NUM_TEST,
    'default_hooks.logger.interval': 1,
    'default_hooks.checkpoint.interval': 1,
    'log_level': 'WARNING',
}


def train(config, work_dir, **options):
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    cfg.merge_from_dict({**TINY, **options})
    cfg.work_dir = str(work_dir)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


@torch.no_grad()
def network_outputs(runner, classifier):
    """Logits, pooled features and labels of ``classifier`` over the run's test split, in order."""
    classifier.eval()
    logits, feats, labels = [], [], []
    for batch in runner.build_dataloader(runner.cfg.test_dataloader):
        data = runner.model.data_preprocessor(batch, False)
        logits.append(classifier(data['inputs'], mode='tensor'))
        feats.append(classifier.extract_feat(data['inputs'], stage='neck')[-1])
        labels += [int(s.gt_label[0]) for s in data['data_samples']]
    return torch.cat(logits).numpy(), torch.cat(feats).numpy(), np.array(labels)


class Outputs:
    """Commands started together in the background; each one's output is waited for once."""

    def __init__(self, cmd, commands):
        self.cmd = cmd
        self.procs = {name: cmd.start(command) for name, command in commands.items()}
        self.outputs = {}

    def __getitem__(self, name):
        if name not in self.outputs:
            self.outputs[name] = self.cmd.wait(self.procs.pop(name), timeout=300)
        return self.outputs[name]

    def stop(self):
        """End the commands no test waited for (their tests were skipped or failed early)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.fixture(scope='module')
def runs(tmp_path_factory, cmd):
    tmp = tmp_path_factory.mktemp('analysis')
    student = train('configs/demo/student.py', tmp / 'student')
    kd = train('configs/demo/kd.py', tmp / 'kd', **{'model.teacher_ckpt': None})
    # the tools below read a copy: the resumed run further down dumps student.py again, and a
    # tool reading it mid-write saw a config without its dataloaders
    student_cfg = tmp / 'student_config.py'
    shutil.copyfile(tmp / 'student' / 'student.py', student_cfg)
    heavy = Outputs(
        cmd,
        dict(
            correlation=[
                sys.executable,
                CORRELATION,
                student_cfg,
                tmp / 'student' / 'epoch_1.pth',
                student_cfg,
                tmp / 'student' / 'epoch_2.pth',
                tmp / 'kd' / 'kd.py',
                tmp / 'kd' / 'epoch_2.pth',
                '--titles',
                'alone',
                'KD',
                '--out',
                tmp / 'corr.png',
            ],
            tsne=[
                sys.executable,
                TSNE,
                student_cfg,
                tmp / 'student' / 'epoch_2.pth',
                tmp / 'kd' / 'kd.py',
                tmp / 'kd' / 'epoch_2.pth',
                '--titles',
                'alone',
                'KD',
                '--max-samples',
                '40',
                '--out',
                tmp / 'tsne.png',
                '--dump',
                tmp / 'tsne.json',
            ],
        ),
    )
    epoch_1 = copy.deepcopy(student.model)
    load_checkpoint(
        epoch_1, str(tmp / 'student' / 'epoch_1.pth'), map_location='cpu', logger='silent'
    )
    expected = dict(
        student=network_outputs(student, student.model),
        student_epoch_1=network_outputs(student, epoch_1),
        kd=network_outputs(kd, kd.model.architecture),
    )
    # a resumed run: a new <timestamp> folder in the same work dir, logging epoch 3 only
    while time.strftime('%Y%m%d_%H%M%S') == student.timestamp:
        time.sleep(0.2)
    train('configs/demo/student.py', tmp / 'student', resume=True, **{'train_cfg.max_epochs': 3})
    yield tmp, heavy, expected
    heavy.stop()


def read_log(work_dir):
    """The json lines of every run of ``work_dir``, oldest run first."""
    runs = sorted(p for p in work_dir.iterdir() if p.is_dir() and (p / 'vis_data').is_dir())
    return [
        [
            json.loads(line)
            for line in (run / 'vis_data' / f'{run.name}.json').read_text().splitlines()
        ]
        for run in runs
    ]


def assert_png(path, min_size=(300, 250)):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == 'PNG'
        width, height = image.size
        assert width >= min_size[0] and height >= min_size[1], image.size
        pixels = np.asarray(image.convert('L'))
    assert pixels.std() > 5  # not a blank canvas


def test_correlation_differences_match_the_networks_logits(runs):
    tmp, heavy, expected = runs
    out = heavy['correlation']
    assert_png(tmp / 'corr.png', (900, 400))
    result = json.loads((tmp / 'corr.json').read_text())
    # the teacher of this figure: the student alone after 1 epoch; the students: it after 2,
    # and KD's student
    logits_t, _, labels = expected['student_epoch_1']
    corr_t = np.corrcoef(logits_t.T)
    assert corr_t.shape == (10, 10) and result['num_images'] == len(labels) == NUM_TEST
    np.testing.assert_allclose(result['corr_teacher'], corr_t, atol=1e-5)
    assert [s['title'] for s in result['students']] == ['alone', 'KD']
    for student, run in zip(result['students'], ('student', 'kd')):
        logits_s, _, labels_s = expected[run]
        assert (labels_s == labels).all()
        corr_s = np.corrcoef(logits_s.T)
        np.testing.assert_allclose(student['corr'], corr_s, atol=1e-5)
        diff = np.abs(corr_t - corr_s)
        mean_off_diagonal = diff[~np.eye(10, dtype=bool)].mean()
        assert mean_off_diagonal > 1e-3  # differently trained networks
        assert student['mean_abs_diff'] == pytest.approx(mean_off_diagonal, rel=1e-5)
        assert student['max_abs_diff'] == pytest.approx(diff.max(), rel=1e-5)
        assert f'  {student["title"]}: {mean_off_diagonal:.6f}' in out
        assert student['top1'] == pytest.approx((logits_s.argmax(1) == labels).mean() * 100)


def test_tsne_has_one_point_per_image_coloured_by_its_class(runs):
    from sklearn.manifold import trustworthiness

    tmp, heavy, expected = runs
    heavy['tsne']
    assert_png(tmp / 'tsne.png', (900, 400))
    panels = json.loads((tmp / 'tsne.json').read_text())
    assert [p['title'] for p in panels] == ['alone', 'KD']
    indices = panels[0]['indices']
    assert len(indices) == len(set(indices)) == 40 and max(indices) < NUM_TEST
    for panel, run in zip(panels, ('student', 'kd')):
        _, feats, labels = expected[run]
        assert panel['indices'] == indices
        assert panel['labels'] == labels[indices].tolist()
        np.testing.assert_allclose(panel['features'], feats[indices], atol=1e-5)
        coords, labels = np.array(panel['coords']), np.array(panel['labels'])
        assert coords.shape == (40, 2)
        # the 2-D map keeps the features' neighbourhoods (random points score about 0.5)
        assert trustworthiness(feats[indices], coords, n_neighbors=5) > 0.8
        # the drawn points: every image once, in the colour of its class, one colour per class
        assert sorted(panel['classes']) == sorted(str(c) for c in set(labels.tolist()))
        assert sum(len(drawn['offsets']) for drawn in panel['classes'].values()) == 40
        for name, drawn in panel['classes'].items():
            np.testing.assert_allclose(drawn['offsets'], coords[labels == int(name)])
        colours = [tuple(drawn['colour']) for drawn in panel['classes'].values()]
        assert len(set(colours)) == len(colours)


def test_curves_plot_the_logged_values(runs, cmd):
    tmp, _, expected = runs
    out = cmd.python(
        [
            CURVES,
            tmp / 'student',
            tmp / 'kd',
            '--keys',
            'loss',
            'accuracy/top1',
            'student.loss|loss',
            '--runs',
            'all',
            '--legend',
            'alone',
            'KD',
            '--out',
            tmp / 'curves.png',
            '--dump',
            tmp / 'curves.json',
        ]
    )
    assert_png(tmp / 'curves.png', (800, 300))
    curves = json.loads((tmp / 'curves.json').read_text())['curves']
    for name, work_dir in (('alone', 'student'), ('KD', 'kd')):
        lines = [line for run in read_log(tmp / work_dir) for line in run]
        epochs = sorted({line['epoch'] for line in lines if 'epoch' in line})
        assert epochs == ([1, 2, 3] if name == 'alone' else [1, 2])
        loss = [np.mean([line['loss'] for line in lines if line.get('epoch') == e]) for e in epochs]
        assert len([line for line in lines if line.get('epoch') == 1]) == 4
        assert curves['loss'][name]['x'] == epochs
        np.testing.assert_allclose(curves['loss'][name]['y'], loss, rtol=1e-6)
        # the cross-entropy: KD's student.loss (below its total loss), the student alone's loss
        ce_key = 'loss' if name == 'alone' else 'student.loss'
        ce = [np.mean([line[ce_key] for line in lines if line.get('epoch') == e]) for e in epochs]
        np.testing.assert_allclose(curves['student.loss|loss'][name]['y'], ce, rtol=1e-6)
        assert (name == 'alone') == np.allclose(ce, loss)
        val = [(line['step'], line['accuracy/top1']) for line in lines if 'accuracy/top1' in line]
        assert [x for x, _ in val] == epochs
        assert curves['accuracy/top1'][name] == dict(x=[x for x, _ in val], y=[y for _, y in val])
    # the last validation of the KD run scored the network this test ran itself
    logits, _, labels = expected['kd']
    assert curves['accuracy/top1']['KD']['y'][-1] == pytest.approx(
        (logits.argmax(1) == labels).mean() * 100
    )
    assert f'KD: accuracy/top1 at epoch 2 = {curves["accuracy/top1"]["KD"]["y"][-1]:.4f}' in out


def test_curves_read_the_latest_run_or_iterations(runs, cmd):
    tmp, _, _ = runs
    first, resumed = read_log(tmp / 'student')
    cmd.python(
        [
            CURVES,
            tmp / 'student',
            '--keys',
            'loss',
            'lr',
            '--x',
            'iter',
            '--dump',
            tmp / 'latest.json',
        ]
    )
    assert (tmp / 'student' / 'curves.png').is_file()
    curves = json.loads((tmp / 'latest.json').read_text())['curves']
    train = [line for line in resumed if 'iter' in line]
    assert len(train) == 4 and all(
        line['epoch'] == 3 for line in train
    )  # the resumed run: epoch 3 only
    for key in ('loss', 'lr'):
        assert curves[key][str(tmp / 'student')] == dict(
            x=[line['iter'] for line in train], y=[line[key] for line in train]
        )
    out = cmd.python([CURVES, tmp / 'student', '--keys', 'acc'], check=False)
    assert (
        "no run logged ['acc']; the logs hold: ['accuracy/top1', 'data_time', 'loss', 'lr', 'time']"
        in out
    )
    out = cmd.python(
        [CURVES, tmp / 'student', '--keys', 'accuracy/top1', '--x', 'iter'], check=False
    )
    assert "logs 'accuracy/top1' per epoch" in out and 'plot it with --x epoch' in out


@pytest.mark.slow
def test_tsne_of_a_crossmodal_student_on_the_training_split(tmp_path, cmd):
    """A CrossModalDistill checkpoint (with CRD's memory bank).

    The student's backbone features of its own 4x4 view.
    """
    from mmpretrain.registry import DATASETS

    runner = train(
        'configs/demo/crossmodal.py',
        tmp_path / 'crossmodal',
        **{'model.teacher_ckpt': None, 'train_cfg.max_epochs': 1},
    )
    cmd.python(
        [
            TSNE,
            tmp_path / 'crossmodal' / 'crossmodal.py',
            tmp_path / 'crossmodal' / 'epoch_1.pth',
            '--layer',
            'backbone',
            '--split',
            'train',
            '--dump',
            tmp_path / 'tsne.json',
            '--cfg-options',
            'train_dataloader.dataset.indices=30',
        ],
        timeout=300,
    )
    assert_png(tmp_path / 'crossmodal' / 'tsne_backbone_train.png', (500, 400))
    (panel,) = json.loads((tmp_path / 'tsne.json').read_text())
    cfg = runner.cfg
    train_images = DATASETS.build(
        dict(
            cfg.train_dataloader.dataset, indices=30, pipeline=cfg.test_dataloader.dataset.pipeline
        )
    )
    batch = runner.model.data_preprocessor(
        runner.build_dataloader(dict(cfg.test_dataloader, dataset=train_images))
        .__iter__()
        .__next__(),
        False,
    )
    assert batch['inputs'].shape[-2:] == (4, 4)  # the student's view
    student = runner.model.architecture.eval()
    with torch.no_grad():
        feats = student.extract_feat(batch['inputs'], stage='backbone')[-1].flatten(1).numpy()
    assert panel['indices'] == list(range(30))
    assert panel['labels'] == [int(s.gt_label[0]) for s in batch['data_samples']]
    np.testing.assert_allclose(panel['features'], feats, atol=1e-5)
    assert np.array(panel['coords']).shape == (30, 2)
