"""Cross-modal transfer: TeacherView + CrossModalDistill + CrossModalDistillValLoop.

All with real Runners.

The teacher sees the L channel of CIE Lab at the image's full 32x32 size, the
student the ab channels at 16x16. What reaches each network is recorded by
forward pre-hooks on the two backbones and compared with the views computed
here directly with OpenCV from the image files.
"""

import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.runner import Runner
from mmpretrain.structures import DataSample
from tiny_configs import crd_distiller, distill_config, image_folder_loader

import crd_mm  # noqa: F401  (registers the plugin's modules)
from crd_mm.datasets.transforms import ConvertColor, SelectChannels, TeacherView
from crd_mm.memory import MemoryBankClient
from crd_mm.memory.bank import ContrastMemoryBank

L_MEAN, L_STD = 127.5, 127.5
AB_MEAN, AB_STD = 128.0, 127.5
TEACHER_BRANCH = [
    dict(type='ConvertColor', conversion='BGR2Lab'),
    dict(type='SelectChannels', channels=[0]),
]
STUDENT_VIEW = [
    dict(type='Resize', scale=16),
    dict(type='ConvertColor', conversion='BGR2Lab'),
    dict(type='SelectChannels', channels=[1, 2]),
]


def crossmodal_config(data_root, work_dir, teacher_branch=TEACHER_BRANCH, validate=True):
    """The tiny CRD distiller as CrossModalDistill: teacher on L (32x32), student on ab (16x16)."""
    cfg = distill_config(data_root, work_dir, crd_distiller({}), max_epochs=1, batch_size=4)
    model = cfg.model
    model.type = 'CrossModalDistill'
    model.architecture.backbone.in_channels = 2
    model.teacher.backbone.in_channels = 1
    model.data_preprocessor = dict(
        type='mmpretrain.ClsDataPreprocessor', mean=[AB_MEAN] * 2, std=[AB_STD] * 2
    )
    model.teacher_data_preprocessor = dict(
        type='mmpretrain.ClsDataPreprocessor', mean=[L_MEAN], std=[L_STD]
    )
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='TeacherView', transforms=teacher_branch),
        *STUDENT_VIEW,
        dict(type='PackInputs', algorithm_keys=['teacher_inputs']),
    ]
    cfg.train_dataloader.dataset.pipeline = pipeline
    if validate:
        cfg.val_dataloader = image_folder_loader(data_root, batch_size=4, shuffle=False)
        cfg.val_dataloader.dataset.pipeline = pipeline
        cfg.val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1,))
        cfg.val_cfg = dict(type='mmrazor.CrossModalDistillValLoop')
        cfg.train_cfg.val_interval = 1
    return cfg


def expected_views(img_path):
    """The two views of one image file, computed here with OpenCV alone."""
    img = cv2.imread(img_path)  # BGR, 32x32
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2Lab).astype(np.float32)
    teacher = (lab[..., :1] - L_MEAN) / L_STD
    small = cv2.cvtColor(
        cv2.resize(img, (16, 16), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2Lab
    )
    student = (small[..., 1:].astype(np.float32) - AB_MEAN) / AB_STD
    return (torch.from_numpy(teacher).permute(2, 0, 1), torch.from_numpy(student).permute(2, 0, 1))


def test_teacher_and_student_receive_their_own_views(imagefolder, tmp_path):
    runner = Runner.from_cfg(crossmodal_config(imagefolder, tmp_path / 'work'))
    model = runner.model
    seen = []  # (network, training, input batch, image paths of the batch)
    paths = []

    def record(name):
        def hook(module, args):
            seen.append((name, module.training, args[0].detach().clone(), list(paths)))

        return hook

    def remember_paths(module, args, kwargs):
        samples = args[1] if len(args) > 1 else kwargs.get('data_samples')
        paths[:] = [s.img_path for s in samples]

    # the distiller passes (inputs, data_samples) to each network; the paths tie a batch to its
    # files
    model.student.register_forward_pre_hook(remember_paths, with_kwargs=True)
    model.teacher.register_forward_pre_hook(remember_paths, with_kwargs=True)
    model.teacher.backbone.register_forward_pre_hook(record('teacher'))
    model.student.backbone.register_forward_pre_hook(record('student'))
    runner.train()

    teacher = [s for s in seen if s[0] == 'teacher']
    student = [s for s in seen if s[0] == 'student']
    # 8 images: 2 training steps and one validation pass of 2 batches, for each network
    assert len(teacher) == len(student) == 4
    for name, _training, batch, batch_paths in seen:
        assert batch.shape == ((4, 1, 32, 32) if name == 'teacher' else (4, 2, 16, 16))
        for row, path in zip(batch, batch_paths):
            expected = expected_views(path)[0 if name == 'teacher' else 1]
            torch.testing.assert_close(row, expected, atol=1e-5, rtol=0)
    # the student trained on 2 batches, then both networks were validated on theirs
    assert [s[1] for s in student] == [True, True, False, False]
    hub = runner.message_hub
    assert np.isfinite(hub.get_scalar('train/distill.loss_crd').current())
    assert 0 <= hub.get_scalar('val/teacher.accuracy/top1').current() <= 100
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')


def test_views_of_different_batch_sizes_stop_before_training(imagefolder, tmp_path):
    # a multi-view transform in the teacher's branch would give it 2 images per sample
    branch = [dict(type='MultiView', num_views=2, transforms=[TEACHER_BRANCH])]
    runner = Runner.from_cfg(
        crossmodal_config(imagefolder, tmp_path / 'work', branch, validate=False)
    )
    with pytest.raises(ValueError, match=r'made 2 images of one sample.*one view per sample'):
        runner.train()
    assert runner.iter == 0
    assert not osp.exists(tmp_path / 'work' / 'epoch_1.pth')


def build_model(imagefolder, tmp_path, **changes):
    from mmengine.registry import MODELS

    cfg = crossmodal_config(imagefolder, tmp_path, validate=False)
    cfg.model.update(changes)
    model = MODELS.build(cfg.model)
    for client in (m for m in model.modules() if isinstance(m, MemoryBankClient)):
        spec = (
            client.bank_requirements()
        )  # a real bank, as CRDMemoryBankHook attaches before training
        client.attach_memory_bank(
            ContrastMemoryBank(2, spec['feat_dim'], spec['momentum'], labels=torch.tensor([0, 1]))
        )
    return model


def sample(i, view):
    data_sample = DataSample(metainfo=dict(sample_idx=i)).set_gt_label(i % 2)
    if view is not None:
        data_sample.set_field(view, 'teacher_inputs')
    return data_sample


def test_algorithm_refuses_samples_without_exactly_one_teacher_view(imagefolder, tmp_path):
    model = build_model(imagefolder, tmp_path)
    student = torch.randint(0, 256, (2, 2, 16, 16), dtype=torch.uint8)
    one = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    # a view stored with the sample as a stack of 3 images: the teacher's batch would be 4, not 2
    data = model.data_preprocessor(
        dict(
            inputs=list(student), data_samples=[sample(0, one), sample(1, torch.stack([one] * 3))]
        ),
        training=True,
    )
    with pytest.raises(
        ValueError,
        match=r'different batch sizes: the teacher would get 4 images but the '
        r'student gets 2',
    ):
        model(**data, mode='loss')
    data = model.data_preprocessor(
        dict(inputs=list(student), data_samples=[sample(0, one), sample(1, None)])
    )
    with pytest.raises(ValueError, match=r"no 'teacher_inputs' field.*TeacherView.*algorithm_keys"):
        model(**data, mode='loss')
    data = model.data_preprocessor(
        dict(inputs=list(student), data_samples=[sample(0, one), sample(1, one)])
    )
    losses = model(**data, mode='loss')
    assert {'student.loss', 'distill.loss_crd'} <= set(losses)


@pytest.mark.parametrize(
    'changes, error',
    [
        (dict(teacher_data_preprocessor=None), r'needs teacher_data_preprocessor'),
        (
            dict(
                teacher_data_preprocessor=dict(
                    type='mmpretrain.ClsDataPreprocessor',
                    num_classes=2,
                    batch_augments=dict(augments=dict(type='Mixup', alpha=1.0)),
                )
            ),
            r'must not have batch_augments',
        ),
    ],
)
def test_algorithm_config_errors(imagefolder, tmp_path, changes, error):
    with pytest.raises(ValueError, match=error):
        build_model(imagefolder, tmp_path, **changes)


def test_teacher_view_leaves_the_students_view_and_reads_other_keys():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    depth = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    results = TeacherView(transforms=[dict(type='Resize', scale=(4, 3))])(
        dict(img=img.copy(), img_shape=(6, 8), depth=depth)
    )
    np.testing.assert_array_equal(results['img'], img)
    assert results['img_shape'] == (6, 8)
    assert results['teacher_inputs'].shape == (3, 3, 4)
    # another modality stored with the sample, untouched by the branch (empty), as (1, H, W)
    results = TeacherView(in_key='depth', out_key='depth_view')(dict(img=img, depth=depth))
    torch.testing.assert_close(results['depth_view'], torch.from_numpy(depth)[None])
    with pytest.raises(KeyError, match="no 'depth'"):
        TeacherView(in_key='depth')(dict(img=img))


def test_colour_transforms():
    img = np.array([[[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)  # BGR: red, white
    lab = ConvertColor('BGR2Lab')(dict(img=img))['img']
    # white: L = 100 -> 255, a = b = 0 -> 128; red: a and b clearly positive
    np.testing.assert_array_equal(lab[0, 1], [255, 128, 128])
    assert lab[0, 0, 1] > 128 + 50 and lab[0, 0, 2] > 128 + 50
    ab = SelectChannels([1, 2])(dict(img=lab))['img']
    np.testing.assert_array_equal(ab, lab[..., 1:])
    assert SelectChannels([0])(dict(img=lab))['img'].shape == (1, 2, 1)
    with pytest.raises(ValueError, match="no conversion 'COLOR_BGR2LUV_X'"):
        ConvertColor('BGR2LUV_X')
    with pytest.raises(ValueError, match='asked of an image with 3 channels'):
        SelectChannels([3])(dict(img=lab))


@pytest.mark.slow
@pytest.mark.parametrize(
    'config',
    [
        'configs/crossmodal/crd_lab-l-resnet50_lab-ab-resnet18_imagefolder.py',
        'configs/crossmodal/crd_resnet34-224px_resnet18-112px_in1k.py',
    ],
)
def test_recipe_trains_and_validates_through_tools_train(config, cmd, make_imagefolder, tmp_path):
    """2 iterations and one validation of each recipe on tiny data (32x32 crops).

    An image folder for the Lab recipe, the ImageNet layout for the resolution recipe (its
    student at 16x16).
    """
    from test_configs import write_tiny_imagenet

    options = [
        'model.teacher_ckpt=None',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=-1',
        'train_dataloader.dataset.pipeline.1.scale=32',
        'val_dataloader.dataset.pipeline.1.scale=36',
        'val_dataloader.dataset.pipeline.2.crop_size=32',
        'val_evaluator.topk=[1]',
    ]
    if 'imagefolder' in config:
        root = tmp_path / 'data'
        for split in ('train', 'val'):
            make_imagefolder(root / split, num_classes=2, per_class=2, size=40)
        options += ['model.architecture.head.num_classes=2', 'model.teacher.head.num_classes=2']
    else:
        root = write_tiny_imagenet(tmp_path / 'imagenet')
        options += [
            f'{loader}.dataset.pipeline.4.scale=16'
            for loader in ('train_dataloader', 'val_dataloader')
        ]
    for loader in ('train_dataloader', 'val_dataloader'):
        options += [
            f'{loader}.batch_size=2',
            f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
            f'{loader}.dataset.data_root={root}',
        ]
    out = cmd.python(
        ['tools/train.py', config, '--work-dir', tmp_path / 'work', '--cfg-options', *options],
        timeout=300,
    )
    assert 'Epoch(train) [1][2/2]' in out and 'distill.loss_crd:' in out
    assert 'teacher.accuracy/top1' in out
