"""t-SNE map of a trained network's embeddings, one colour per class (the CRD paper's t-SNE figure).

The network's features of a dataset split (by default the pooled features
its classifier head reads, the neck's output) are embedded in 2-D with
scikit-learn's ``TSNE`` and drawn as one dot per image, coloured by the
image's label. Several CONFIG CHECKPOINT pairs make panels side by side, all
on the same images (e.g. the student alone beside the distilled student).

Usage::

    python tools/analysis/embedding_tsne.py CONFIG CKPT [CONFIG CKPT ...] [--titles T ...] \
        [--layer neck|backbone|logits] [--split test|train] [--max-samples 1000] \
        [--perplexity 30] [--seed 0] [--out PNG] [--dump JSON] [--cfg-options KEY=VALUE ...] \
        [--device cpu|cuda]

Each config is a training config (an mmpretrain classifier, or an mmrazor
distiller whose student, ``model.architecture``, is read from its checkpoint
under ``architecture.``); each network sees its config's split through its
config's test pipeline. ``--layer backbone`` takes the backbone's last
feature map, flattened (before pooling); ``logits`` the class scores.
A split larger than ``--max-samples`` is subsampled uniformly at random
(``--seed``; the same images for every panel). The perplexity is lowered to
(N - 1) / 3 for small N. ``--dump`` writes, per panel, the images' indices,
labels, features and 2-D coordinates, and the points and colour of each
class as drawn. The PNG defaults to ``tsne_<layer>_<split>.png`` beside the
first checkpoint.
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
    parser.add_argument(
        'pairs',
        nargs='+',
        metavar='CONFIG CKPT',
        help='one or more training config + checkpoint pairs (one panel each)',
    )
    parser.add_argument(
        '--titles', nargs='+', help='a title per panel (default: the config file names)'
    )
    parser.add_argument(
        '--layer',
        choices=('neck', 'backbone', 'logits'),
        default='neck',
        help='neck: pooled features (default); backbone: last feature map, flattened; '
        'logits: class scores',
    )
    parser.add_argument(
        '--split',
        choices=('test', 'train'),
        default='test',
        help='the dataset split, fed through the test pipeline (default: test)',
    )
    parser.add_argument(
        '--max-samples',
        type=int,
        default=1000,
        help='subsample larger splits to this many images (default: 1000)',
    )
    parser.add_argument(
        '--perplexity', type=float, default=30.0, help="t-SNE's perplexity (default: 30)"
    )
    parser.add_argument('--seed', type=int, default=0, help='seed of the subsample and of t-SNE')
    parser.add_argument('--out', help='the PNG to write (default: beside the first checkpoint)')
    parser.add_argument('--dump', help='also write the plotted points to this JSON file')
    add_network_arguments(parser)
    args = parser.parse_args()
    args.device = default_device(args.device)
    args.pairs = config_checkpoint_pairs(parser, args.pairs, 'CONFIG CKPT')
    if args.titles and len(args.titles) != len(args.pairs):
        parser.error(f'--titles gives {len(args.titles)} titles for {len(args.pairs)} panels')
    if args.max_samples < 4:
        parser.error('--max-samples must be at least 4')
    return args


def embed(features: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE coordinates of the rows of ``features``."""
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, (len(features) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed)
    return tsne.fit_transform(features.astype(np.float64))


def class_colours(num_classes: int):
    """One distinct colour per class: tab10 / tab20, else evenly spaced hues."""
    import matplotlib

    if num_classes <= 10:
        return [matplotlib.colormaps['tab10'](c) for c in range(num_classes)]
    if num_classes <= 20:
        return [matplotlib.colormaps['tab20'](c) for c in range(num_classes)]
    return [matplotlib.colormaps['hsv'](c / num_classes) for c in range(num_classes)]


def main():
    args = parse_args()
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels, indices, names = [], None, None
    for config, checkpoint in args.pairs:
        cfg = Config.fromfile(config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        dataset = build_split(cfg, args.split)
        if indices is None:
            indices = np.arange(len(dataset))
            if len(dataset) > args.max_samples:
                rng = np.random.default_rng(args.seed)
                indices = np.sort(rng.choice(len(dataset), args.max_samples, replace=False))
        elif max(indices) >= len(dataset):
            raise ValueError(
                f"{config}'s {args.split} split has {len(dataset)} images, fewer than the first "
                "panel's: every panel must show the same images"
            )
        outputs = collect_outputs(
            build_trained_classifier(cfg, checkpoint, args.device),
            dataset,
            indices,
            outputs=(args.layer,),
            batch_size=args.batch_size,
        )
        if panels and (outputs['labels'] != panels[0]['labels']).any():
            raise ValueError(
                f"{config}'s {args.split} split has other labels than the first panel's at the "
                'same indices: every panel must show the same images'
            )
        names = names or class_names(dataset, int(outputs['labels'].max()) + 1)
        outputs['coords'] = embed(outputs[args.layer], args.perplexity, args.seed)
        panels.append(outputs)

    colours = class_colours(len(names))
    titles = args.titles or [osp.basename(config) for config, _ in args.pairs]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1.5, 5.5), squeeze=False)
    drawn = []
    for ax, panel, title in zip(axes[0], panels, titles):
        classes = {}
        for c in np.unique(panel['labels']):
            points = panel['coords'][panel['labels'] == c]
            artist = ax.scatter(points[:, 0], points[:, 1], s=8, color=colours[c], label=names[c])
            classes[names[c]] = dict(
                offsets=artist.get_offsets().tolist(), colour=artist.get_facecolors()[0].tolist()
            )
        ax.set_title(
            f'{title}\n{len(panel["labels"])} {args.split} images, {args.layer} features',
            fontsize=10,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        drawn.append(classes)
    if len(names) <= 20:
        handles, labels = axes[0][-1].get_legend_handles_labels()
        fig.legend(handles, labels, loc='center right', title='class', markerscale=2)
        fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    else:
        fig.tight_layout()

    out = args.out or osp.join(
        osp.dirname(osp.abspath(args.pairs[0][1])), f'tsne_{args.layer}_{args.split}.png'
    )
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    if args.dump:
        dump = [
            dict(
                config=config,
                checkpoint=checkpoint,
                title=title,
                layer=args.layer,
                split=args.split,
                indices=panel['indices'].tolist(),
                labels=panel['labels'].tolist(),
                features=panel[args.layer].tolist(),
                coords=panel['coords'].tolist(),
                classes=classes,
            )
            for (config, checkpoint), title, panel, classes in zip(
                args.pairs, titles, panels, drawn
            )
        ]
        with open(args.dump, 'w') as f:
            json.dump(dump, f)
    print(
        f'wrote {out}: t-SNE of the {args.layer} features of {len(indices)} {args.split} images, '
        f'{len(panels)} panel(s)',
        flush=True,
    )


if __name__ == '__main__':
    main()
