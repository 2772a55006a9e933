"""Training curves of any logged metric from one or more work dirs, one subplot per metric.

mmengine writes every run's scalars as json lines to
``WORK_DIR/<timestamp>/vis_data/<timestamp>.json``: training lines (the
logger's running means of ``loss``, ``lr``, each loss term, ...) carry
``iter`` (the global iteration) and, in an epoch-based run, ``epoch``;
validation lines carry the metrics (``accuracy/top1``, ...) and ``step``,
the epoch (epoch-based run) or iteration (iteration-based run) after which
they were measured.

Usage::

    python tools/analysis/plot_curves.py WORK_DIR [WORK_DIR ...] --keys loss accuracy/top1 \
        [--legend NAME ...] [--x epoch|iter] [--runs latest|all] [--out PNG] [--dump JSON]

``--x epoch`` (default) plots validation metrics at their epoch and training
values as the mean of the lines logged in each epoch; ``--x iter`` plots
training values at their iteration, and validation metrics of
iteration-based runs at theirs (an epoch-based run logs no iteration for its
validations: plot those with ``--x epoch``). ``--runs latest`` (default)
reads the newest run of each work dir that logged anything; ``all`` reads
every run in time order, a later run's value replacing an earlier one's at
the same x (a resumed run repeats no point). A WORK_DIR may also be one run's
``<timestamp>`` folder or its json file. A key ``a|b`` plots ``a``, or ``b``
in work dirs that did not log ``a`` (e.g. ``student.loss|loss``: the
cross-entropy term of a distillation run, the loss of a plain one). The PNG
defaults to ``curves.png`` in the folder the work dirs share; ``--dump``
writes the plotted points, read back from the figure, as JSON.
"""

import argparse
import glob
import json
import os
import os.path as osp
import re
from collections import OrderedDict, defaultdict
from typing import Dict, List, Tuple

TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'work_dirs', nargs='+', metavar='WORK_DIR', help='work dirs (or run folders, or json logs)'
    )
    parser.add_argument(
        '--keys',
        nargs='+',
        default=['loss', 'accuracy/top1'],
        help='logged scalars to plot, one subplot each (default: loss accuracy/top1); '
        "'a|b' plots a, or b in work dirs that did not log a",
    )
    parser.add_argument('--legend', nargs='+', help='a name per work dir (default: the paths)')
    parser.add_argument(
        '--x', choices=('epoch', 'iter'), default='epoch', help='the x axis (default: epoch)'
    )
    parser.add_argument(
        '--runs',
        choices=('latest', 'all'),
        default='latest',
        help="each work dir's newest run (default), or all its runs in time order",
    )
    parser.add_argument('--title', help='a title over the figure')
    parser.add_argument(
        '--out', help="the PNG to write (default: curves.png in the work dirs' common folder)"
    )
    parser.add_argument('--dump', help='also write the plotted points to this JSON file')
    args = parser.parse_args()
    if args.legend and len(args.legend) != len(args.work_dirs):
        parser.error(f'--legend gives {len(args.legend)} names for {len(args.work_dirs)} work dirs')
    return args


def run_logs(work_dir: str) -> List[str]:
    """The json logs of a work dir's runs, oldest first (only those that logged something)."""
    if osp.isfile(work_dir):
        return [work_dir]
    if not osp.isdir(work_dir):
        raise FileNotFoundError(
            f'{work_dir} does not exist (give a work dir, a run folder or a json log)'
        )
    name = osp.basename(osp.normpath(work_dir))
    if TIMESTAMP.match(name) and osp.isdir(osp.join(work_dir, 'vis_data')):
        candidates = [osp.join(work_dir, 'vis_data', f'{name}.json')]
    else:
        candidates = [
            osp.join(work_dir, run, 'vis_data', f'{run}.json')
            for run in sorted(os.listdir(work_dir))
            if TIMESTAMP.match(run)
        ]
    logs = [path for path in candidates if osp.isfile(path) and osp.getsize(path) > 0]
    if not logs:
        found = sorted(glob.glob(osp.join(work_dir, '*')))[:10]
        raise FileNotFoundError(
            f'{work_dir} holds no run log <timestamp>/vis_data/<timestamp>.json (mmengine '
            f'writes one per training run); found: {found}'
        )
    return logs


def read_lines(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def curve(lines: List[dict], key: str, x_axis: str, source: str) -> Dict[float, float]:
    """x -> value of ``key`` in a run's log lines (the module docstring gives each line's x)."""
    train = [line for line in lines if 'iter' in line]
    epoch_based = any('epoch' in line for line in train)
    points: Dict[float, float] = OrderedDict()
    per_epoch = defaultdict(list)
    for line in lines:
        if key not in line:
            continue
        if 'iter' in line:  # a training line
            if x_axis == 'iter':
                points[line['iter']] = line[key]
            elif 'epoch' in line:
                per_epoch[line['epoch']].append(line[key])
            else:
                raise ValueError(
                    f'{source} is an iteration-based run (its lines have no epoch): use --x iter'
                )
        elif x_axis == 'epoch' and not epoch_based and train:
            raise ValueError(
                f'{source} is an iteration-based run (its lines have no epoch): use --x iter'
            )
        elif x_axis == 'iter' and epoch_based:
            raise ValueError(
                f'{source} logs {key!r} per epoch (an epoch-based run logs no iteration for its '
                'validations): plot it with --x epoch'
            )
        else:
            points[line['step']] = line[key]
    for epoch, values in per_epoch.items():
        points[epoch] = sum(values) / len(values)
    return points


def collect(args) -> Tuple[Dict[str, Dict[str, Tuple[list, list]]], Dict[str, List[str]]]:
    """key -> legend name -> (xs, ys), and legend name -> the json logs read."""
    names = args.legend or list(args.work_dirs)
    curves = {key: OrderedDict() for key in args.keys}
    sources, available = {}, set()
    for work_dir, name in zip(args.work_dirs, names):
        logs = run_logs(work_dir)
        logs = logs if args.runs == 'all' else logs[-1:]
        sources[name] = logs
        runs = [read_lines(path) for path in logs]
        for lines in runs:
            for line in lines:
                available.update(line)
        for key in args.keys:
            # 'a|b': the first of the alternatives this work dir logged
            logged = [
                alt
                for alt in key.split('|')
                if any(alt in line for lines in runs for line in lines)
            ]
            merged = {}
            for path, lines in zip(logs, runs):
                if logged:
                    merged.update(curve(lines, logged[0], args.x, path))
            if merged:
                xs = sorted(merged)
                curves[key][name] = (xs, [merged[x] for x in xs])
    missing = [key for key in args.keys if not curves[key]]
    if missing:
        hidden = {'epoch', 'iter', 'step'}
        raise ValueError(f'no run logged {missing}; the logs hold: {sorted(available - hidden)}')
    return curves, sources


def main():
    args = parse_args()
    curves, sources = collect(args)
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.keys), figsize=(5 * len(args.keys), 4), squeeze=False)
    dump = dict(x=args.x, runs=sources, curves={})
    for ax, key in zip(axes[0], args.keys):
        dump['curves'][key] = {}
        for name, (xs, ys) in curves[key].items():
            (line,) = ax.plot(
                xs, ys, marker='o' if len(xs) <= 30 else None, markersize=3, label=name
            )
            dump['curves'][key][name] = dict(
                x=[float(v) for v in line.get_xdata()], y=[float(v) for v in line.get_ydata()]
            )
        ax.set_xlabel(args.x)
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    folders = [
        osp.dirname(osp.abspath(w)) if osp.isfile(w) else osp.abspath(w) for w in args.work_dirs
    ]
    out = args.out or osp.join(osp.commonpath(folders), 'curves.png')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    if args.dump:
        with open(args.dump, 'w') as f:
            json.dump(dump, f, indent=1)
    for key in args.keys:
        for name, (xs, ys) in curves[key].items():
            print(f'{name}: {key} at {args.x} {xs[-1]:g} = {ys[-1]:.4f}')
    print(f'wrote {out}', flush=True)


if __name__ == '__main__':
    main()
