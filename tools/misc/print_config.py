"""Print a config resolved: its ``_base_`` files merged and ``--cfg-options`` applied.

Same flags as mmpretrain 1.2.0's ``tools/misc/print_config.py`` plus
``--format``: ``py`` (default) prints mmengine's Python text, ``yaml`` a
self-contained YAML recipe that mmengine's ``Config.fromfile`` loads back to
the same config (save it with ``> my_recipe.yaml``). Tuples are written as
``!!python/tuple`` so that they load back as tuples (mmengine's YAML loader
reads that tag; some transforms accept tuples only). Importing crd_mm first
lets configs inherit ``crd_mm::`` recipes.
"""

import argparse

import mmengine
from mmengine.config import Config, DictAction

import crd_mm


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Print the whole config')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings with key=value pairs, e.g. '
        'train_cfg.max_epochs=10 or key="[a,b]"; no white space allowed',
    )
    parser.add_argument(
        '--format',
        choices=['py', 'yaml'],
        default='py',
        help='print the config as Python (default) or as a resolved YAML recipe',
    )
    return parser.parse_args(argv)


def yaml_text(cfg: Config, header: str = '') -> str:
    """``cfg`` as a YAML recipe in its own key order, ``header`` as leading comment lines."""
    body = mmengine.dump(
        cfg.to_dict(),
        file_format='yaml',
        sort_keys=False,
        default_flow_style=None,
        width=100,
        allow_unicode=True,
    )
    comments = ''.join(f'# {line}\n' for line in header.splitlines())
    return comments + body


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.format == 'py':
        print(cfg.pretty_text)
        return
    options = ' '.join(f'{k}={v}' for k, v in (args.cfg_options or {}).items())
    print(
        yaml_text(
            cfg,
            f'{args.config}{" with " + options if options else ""}, resolved by '
            f'tools/misc/print_config.py (crd_mm {crd_mm.__version__}).\n'
            "Load it with mmengine's Config.fromfile.",
        ),
        end='',
    )


if __name__ == '__main__':
    main()
