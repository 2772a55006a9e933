"""Teacher-student correlation difference of the logits: the CRD paper's heatmap.

Tian et al., ICLR 2020.

For each network, the class logits over a dataset split (N images, C
classes) give a C x C matrix of Pearson correlations between the classes'
logits (``numpy.corrcoef`` over the N images). A student that learned how
its teacher relates the classes has a correlation matrix close to the
teacher's; the heatmap shows ``|corr_teacher - corr_student|`` per class
pair, and its mean over the C * (C - 1) off-diagonal pairs (the diagonal is
1 - 1 = 0 for any network) is printed, put in the title and written with the
matrices to a JSON file beside the PNG.

Usage::

    python tools/analysis/logit_correlation.py TEACHER_CONFIG TEACHER_CKPT \
        STUDENT_CONFIG STUDENT_CKPT [STUDENT_CONFIG STUDENT_CKPT ...] \
        [--titles T ...] [--split test|train] [--vmax V] [--out PNG] \
        [--cfg-options KEY=VALUE ...] [--device cpu|cuda]

Several students make panels side by side on one colour scale (as the
paper's figure: the student alone, with KD, with CRD), up to ``--vmax``
(default: the largest difference of all panels).

Each config is a training config (an mmpretrain classifier, or an mmrazor
distiller whose student, ``model.architecture``, is read from its checkpoint
under ``architecture.``). Each network sees its own config's split through
its own config's test pipeline (so a cross-modal student sees its own view);
the two splits must hold the same labelled images in the same order.
``--cfg-options`` applies to both configs (e.g.
``test_dataloader.dataset.indices=200`` for a subset). The PNG defaults to
``logit_correlation_<split>.png`` beside the first student's checkpoint;
the JSON has the same name with ``.json``.
"""

import argparse
import json
import os
import os.path as osp

import numpy as np
from mmengine.config import Config

from crd_mm.utils.analysis import (
    add_network_arguments,
    build_split,
    build_trained_classifier,
    class_names,
    collect_outputs,
    config_checkpoint_pairs,
    default_device,
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('teacher_config', help="the teacher's training config")
    parser.add_argument('teacher_checkpoint', help="the teacher's checkpoint")
    parser.add_argument(
        'students',
        nargs='+',
        metavar='STUDENT_CONFIG STUDENT_CKPT',
        help="one or more students' training configs (classifier or distiller) and checkpoints",
    )
    parser.add_argument(
        '--titles', nargs='+', help='a title per student (default: the config file names)'
    )
    parser.add_argument(
        '--split',
        choices=('test', 'train'),
        default='test',
        help='the dataset split, fed through the test pipeline (default: test)',
    )
    parser.add_argument(
        '--vmax', type=float, help='top of the colour scale (default: the largest difference)'
    )
    parser.add_argument(
        '--out', help="the PNG to write (default: beside the first student's checkpoint)"
    )
    add_network_arguments(parser)
    args = parser.parse_args()
    args.device = default_device(args.device)
    args.students = config_checkpoint_pairs(parser, args.students, 'STUDENT_CONFIG STUDENT_CKPT')
    if args.titles and len(args.titles) != len(args.students):
        parser.error(f'--titles gives {len(args.titles)} titles for {len(args.students)} students')
    return args


def logits_of(config: str, checkpoint: str, args):
    cfg = Config.fromfile(config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    dataset = build_split(cfg, args.split)
    model = build_trained_classifier(cfg, checkpoint, args.device)
    outputs = collect_outputs(model, dataset, batch_size=args.batch_size)
    return outputs, dataset


def correlation(logits: np.ndarray, who: str) -> np.ndarray:
    """The C x C Pearson correlation of the class logits over the images (rows)."""
    if len(logits) < 2:
        raise ValueError(f'{who} saw {len(logits)} image(s): a correlation needs at least 2')
    constant = np.flatnonzero(logits.std(axis=0) == 0)
    if len(constant):
        raise ValueError(
            f"{who}'s logits of classes {constant.tolist()} are the same for every image, "
            'so their correlation is undefined (an untrained or collapsed network?)'
        )
    return np.corrcoef(logits, rowvar=False)


def top1(outputs) -> float:
    return float((outputs['logits'].argmax(1) == outputs['labels']).mean() * 100)


def plot(diffs, titles, names, vmax: float, out: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    num_classes = len(names)
    size = min(4 + 0.35 * num_classes, 10)
    fig, axes = plt.subplots(
        1, len(diffs), figsize=(size * len(diffs) + 1.5, size + 0.5), squeeze=False
    )
    for ax, diff, title in zip(axes[0], diffs, titles):
        image = ax.imshow(diff, cmap='viridis', vmin=0.0, vmax=vmax, interpolation='nearest')
        if num_classes <= 30:
            ax.set_xticks(range(num_classes), names, rotation=90)
            ax.set_yticks(range(num_classes), names)
        ax.set_xlabel('class')
        ax.set_ylabel('class')
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label='|corr teacher - corr student|', shrink=0.85)
    fig.savefig(out, dpi=100, bbox_inches='tight')
    plt.close(fig)


def main():
    args = parse_args()
    teacher, _ = logits_of(args.teacher_config, args.teacher_checkpoint, args)
    corr_t = correlation(teacher['logits'], 'the teacher')
    num_images, num_classes = teacher['logits'].shape
    off_diagonal = ~np.eye(num_classes, dtype=bool)
    titles = args.titles or [osp.basename(config) for config, _ in args.students]
    students, diffs, names = [], [], None
    for (config, checkpoint), title in zip(args.students, titles):
        student, dataset = logits_of(config, checkpoint, args)
        labels = student['labels']
        if len(labels) != num_images or (labels != teacher['labels']).any():
            raise ValueError(
                f"{config}'s {args.split} split differs from the teacher's ({len(labels)} and "
                f'{num_images} images, or other labels in the same places): the correlations '
                'must be taken over the same images in the same order'
            )
        if student['logits'].shape[1] != num_classes:
            raise ValueError(
                f"the teacher has {num_classes} classes, {config}'s network "
                f'{student["logits"].shape[1]}'
            )
        corr_s = correlation(student['logits'], config)
        diff = np.abs(corr_t - corr_s)
        diffs.append(diff)
        names = names or class_names(dataset, num_classes)
        students.append(
            dict(
                config=config,
                checkpoint=checkpoint,
                title=title,
                top1=top1(student),
                mean_abs_diff=float(diff[off_diagonal].mean()),
                max_abs_diff=float(diff.max()),
                corr=corr_s.tolist(),
            )
        )

    out = args.out or osp.join(
        osp.dirname(osp.abspath(args.students[0][1])), f'logit_correlation_{args.split}.png'
    )
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    vmax = args.vmax or max(float(diff.max()) for diff in diffs)
    plot(
        diffs,
        [
            f'{s["title"]}\nmean |corr diff| {s["mean_abs_diff"]:.4f} (off-diagonal)'
            for s in students
        ],
        names,
        vmax,
        out,
    )
    result = dict(
        teacher_config=args.teacher_config,
        teacher_checkpoint=args.teacher_checkpoint,
        teacher_top1=top1(teacher),
        split=args.split,
        num_images=num_images,
        num_classes=num_classes,
        corr_teacher=corr_t.tolist(),
        students=students,
    )
    json_path = osp.splitext(out)[0] + '.json'
    with open(json_path, 'w') as f:
        json.dump(result, f, indent=1)
    print(
        f'{num_images} {args.split} images; teacher {osp.basename(args.teacher_config)}: top-1 '
        f'{result["teacher_top1"]:.2f}'
    )
    print(
        f'mean |corr_teacher - corr_student| over the {num_classes * (num_classes - 1)} '
        'off-diagonal class pairs:'
    )
    for s in students:
        print(
            f'  {s["title"]}: {s["mean_abs_diff"]:.6f} '
            f'(max {s["max_abs_diff"]:.4f}; top-1 {s["top1"]:.2f})'
        )
    print(f'wrote {out} and {json_path}', flush=True)


if __name__ == '__main__':
    main()
