"""Teacher-student correlation difference of the logits: the heatmap of the CRD paper (Tian et al. 2020).

For each network, the class logits over a dataset split (N images, C
classes) give a C x C matrix of Pearson correlations between the classes'
logits (``numpy.corrcoef`` over the N images). A student that learned how
its teacher relates the classes has a correlation matrix close to the
teacher's; the heatmap shows ``|corr_teacher - corr_student|`` per class
pair, and its mean over the C * (C - 1) off-diagonal pairs (the diagonal is
1 - 1 = 0 for any network) is printed, put in the title and written with the
matrices to a JSON file beside the PNG.

Usage::

    python tools/analysis/logit_correlation.py TEACHER_CONFIG TEACHER_CKPT STUDENT_CONFIG STUDENT_CKPT \
        [--split test|train] [--out PNG] [--cfg-options KEY=VALUE ...]

Each config is a training config (an mmpretrain classifier, or an mmrazor
distiller whose student, ``model.architecture``, is read from its checkpoint
under ``architecture.``). Each network sees its own config's split through
its own config's test pipeline (so a cross-modal student sees its own view);
the two splits must hold the same labelled images in the same order.
``--cfg-options`` applies to both configs (e.g.
``test_dataloader.dataset.indices=200`` for a subset). The PNG defaults to
``logit_correlation_<split>.png`` beside the student checkpoint; the JSON
has the same name with ``.json``.
"""
import argparse
import json
import os
import os.path as osp

import numpy as np
from mmengine.config import Config, DictAction

from crd_mm.utils.analysis import build_split, build_trained_classifier, class_names, collect_outputs


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('teacher_config', help="the teacher's training config")
    parser.add_argument('teacher_checkpoint', help="the teacher's checkpoint")
    parser.add_argument('student_config', help="the student's training config (classifier or distiller)")
    parser.add_argument('student_checkpoint', help="the student's checkpoint")
    parser.add_argument('--split', choices=('test', 'train'), default='test',
                        help='the dataset split, fed through the test pipeline (default: test)')
    parser.add_argument('--out', help='the PNG to write (default: beside the student checkpoint)')
    parser.add_argument('--batch-size', type=int, default=64, help='images per forward pass')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override keys of both configs, e.g. test_dataloader.dataset.indices=200')
    return parser.parse_args()


def logits_of(config: str, checkpoint: str, args):
    cfg = Config.fromfile(config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    dataset = build_split(cfg, args.split)
    outputs = collect_outputs(build_trained_classifier(cfg, checkpoint), dataset, batch_size=args.batch_size)
    return outputs, dataset


def correlation(logits: np.ndarray, who: str) -> np.ndarray:
    """The C x C Pearson correlation of the class logits over the images (rows)."""
    if len(logits) < 2:
        raise ValueError(f'the {who} saw {len(logits)} image(s): a correlation needs at least 2')
    constant = np.flatnonzero(logits.std(axis=0) == 0)
    if len(constant):
        raise ValueError(f"the {who}'s logits of classes {constant.tolist()} are the same for every image, "
                         'so their correlation is undefined (an untrained or collapsed network?)')
    return np.corrcoef(logits, rowvar=False)


def plot(diff: np.ndarray, names, title: str, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    num_classes = len(diff)
    size = min(4 + 0.35 * num_classes, 12)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(diff, cmap='viridis', vmin=0.0, interpolation='nearest')
    fig.colorbar(image, ax=ax, label='|corr teacher - corr student|')
    if num_classes <= 30:
        ax.set_xticks(range(num_classes), names, rotation=90)
        ax.set_yticks(range(num_classes), names)
    ax.set_xlabel('class')
    ax.set_ylabel('class')
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main():
    args = parse_args()
    teacher, _ = logits_of(args.teacher_config, args.teacher_checkpoint, args)
    student, dataset = logits_of(args.student_config, args.student_checkpoint, args)
    if len(teacher['labels']) != len(student['labels']) or (teacher['labels'] != student['labels']).any():
        raise ValueError(f"the two configs' {args.split} splits differ ({len(teacher['labels'])} and "
                         f"{len(student['labels'])} images, or other labels in the same places): the "
                         'correlations must be taken over the same images in the same order')
    if teacher['logits'].shape[1] != student['logits'].shape[1]:
        raise ValueError(f"the teacher has {teacher['logits'].shape[1]} classes, the student "
                         f"{student['logits'].shape[1]}")
    corr_t = correlation(teacher['logits'], 'teacher')
    corr_s = correlation(student['logits'], 'student')
    diff = np.abs(corr_t - corr_s)
    num_images, num_classes = student['logits'].shape
    off_diagonal = ~np.eye(num_classes, dtype=bool)
    mean_diff = float(diff[off_diagonal].mean())
    top1 = {who: float((out['logits'].argmax(1) == out['labels']).mean() * 100)
            for who, out in (('teacher', teacher), ('student', student))}

    out = args.out or osp.join(osp.dirname(osp.abspath(args.student_checkpoint)),
                               f'logit_correlation_{args.split}.png')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    title = (f'teacher {osp.basename(args.teacher_config)} vs student {osp.basename(args.student_config)}\n'
             f'mean |corr diff| {mean_diff:.4f} (off-diagonal), {num_images} {args.split} images')
    plot(diff, class_names(dataset, num_classes), title, out)
    result = dict(
        teacher_config=args.teacher_config, teacher_checkpoint=args.teacher_checkpoint,
        student_config=args.student_config, student_checkpoint=args.student_checkpoint,
        split=args.split, num_images=num_images, num_classes=num_classes,
        mean_abs_diff=mean_diff, max_abs_diff=float(diff.max()),
        teacher_top1=top1['teacher'], student_top1=top1['student'],
        corr_teacher=corr_t.tolist(), corr_student=corr_s.tolist())
    json_path = osp.splitext(out)[0] + '.json'
    with open(json_path, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'top-1 on the {num_images} {args.split} images: teacher {top1["teacher"]:.2f}, '
          f'student {top1["student"]:.2f}')
    print(f'mean |corr_teacher - corr_student| over the {num_classes * (num_classes - 1)} off-diagonal '
          f'class pairs: {mean_diff:.6f} (max {result["max_abs_diff"]:.4f})')
    print(f'wrote {out} and {json_path}', flush=True)


if __name__ == '__main__':
    main()
