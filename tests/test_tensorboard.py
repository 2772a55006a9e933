"""TensorBoard: the CRD health scalars of CRDMemoryBankHook appear where users look.

A real run of the demo's CRD config (tools/train.py, 4 iterations on CPU) with
the TensorBoard switch of docs/export.md; its event file is read back with
TensorBoard's own ``EventAccumulator``.
"""

import glob
import json
import os.path as osp

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# what CRDMemoryBankHook logs after every iteration for the loss `loss_crd` (crd_mm/memory/hook.py)
HEALTH = ['loss_crd/z_s', 'loss_crd/z_t', 'loss_crd/coverage']
HEALTH += ['loss_crd/update_norm_s', 'loss_crd/update_norm_t']
# The documented switch: a two-line config that adds TensorBoard to the json logs.
USER_CONFIG = """_base_ = ['{base}']
visualizer = dict(vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
"""


def scalars(event_dir):
    """Every scalar of a TensorBoard event directory: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(event_dir)
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()['scalars']
    }


@pytest.mark.parametrize('switch', ['config', pytest.param('cfg_options', marks=pytest.mark.slow)])
def test_crd_health_scalars_reach_tensorboard(switch, tmp_path, cmd):
    if switch == 'config':
        config = tmp_path / 'crd_tensorboard.py'
        config.write_text(USER_CONFIG.format(base=osp.join(REPO_ROOT, 'configs/demo/crd.py')))
        extra = []
    else:  # TensorBoard instead of the json logs, without a file
        config = 'configs/demo/crd.py'
        extra = ['visualizer.vis_backends.0.type=TensorboardVisBackend']
    work_dir = tmp_path / 'work'
    cmd.python(
        [
            'tools/train.py',
            config,
            '--work-dir',
            work_dir,
            '--cfg-options',
            'model.teacher_ckpt=None',
            'train_cfg.max_epochs=2',
            'train_cfg.val_interval=2',
            'default_hooks.logger.interval=1',
            'log_processor.window_size=1',  # each iteration's values, not running means
            *extra,
        ],
        timeout=300,
    )
    (event_file,) = glob.glob(str(work_dir / '*' / 'vis_data' / 'events.out.tfevents.*'))
    logged = scalars(osp.dirname(event_file))
    for tag in HEALTH + ['distill.loss_crd', 'accuracy/top1']:
        assert tag in logged, (tag, sorted(logged))
    # 100 images, batch 64: 2 iterations per epoch, each logged at its iteration; the first
    # wrote 64 of the 100 bank rows, the second the other 36
    coverage = logged['loss_crd/coverage']
    assert [step for step, _ in coverage] == [1, 2, 3, 4]
    assert [value for _, value in coverage] == pytest.approx([0.64, 1.0, 1.0, 1.0])

    json_logs = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    if switch == 'config':  # the json logs are still written, with the same values
        with open(json_logs[0]) as f:
            records = [json.loads(line) for line in f]
        for tag in HEALTH:
            expected = [(r['step'], r[tag]) for r in records if tag in r]
            assert [s for s, _ in logged[tag]] == [s for s, _ in expected]
            assert [v for _, v in logged[tag]] == pytest.approx([v for _, v in expected], rel=1e-6)
    else:
        assert json_logs == []
