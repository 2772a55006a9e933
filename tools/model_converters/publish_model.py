"""Prepare a checkpoint for release, as mmpretrain's publish_model.py.

Usage::

    python tools/model_converters/publish_model.py IN OUT

Keeps only the weights (``state_dict``) and ``meta`` of IN: the optimizer,
message hub, parameter schedulers, memory banks (``CRDMemoryBankHook``) and
any other hook's state are removed. OUT (``name.pth``) is written as
``name-<first 8 hex digits of the written file's sha256>.pth``. Publish the
output of ``convert_to_student.py`` to release a distilled student; see
docs/export.md. The logic is ``crd_mm.utils.export.publish_checkpoint``.
"""

import argparse

from crd_mm.utils.export import publish_checkpoint


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('in_file', help='the checkpoint to publish')
    parser.add_argument('out_file', help='name.pth: the file is written as name-<sha256[:8]>.pth')
    return parser.parse_args()


def main():
    args = parse_args()
    final, removed = publish_checkpoint(args.in_file, args.out_file)
    print(f'removed: {", ".join(removed) if removed else "nothing"}')
    print(f'published: {final}')


if __name__ == '__main__':
    main()
