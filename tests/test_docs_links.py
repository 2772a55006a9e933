"""Every relative link in README.md and the Markdown of docs/ and configs/ points at a file.

Links are ``[text](target)`` and ``![alt](target)`` in the text, and reference
definitions ``[label]: target``; what sits in fenced code blocks or inline code
is code, not a link. Web and mail links (``http://``, ``https://``,
``mailto:``) and in-page anchors (``#section``) are skipped; a ``#anchor`` after
a path is dropped and the path checked. A target is resolved from the folder of
the file that links it.
"""

import glob
import os.path as osp
import re
from urllib.parse import unquote

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

INLINE_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
REFERENCE_DEFINITION = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$')
FENCE = re.compile(r'^\s{0,3}(```|~~~)')
INLINE_CODE = re.compile(r'(`+).*?\1')
SKIPPED_SCHEMES = ('http://', 'https://', 'mailto:')


def markdown_files():
    """README.md and every Markdown file under docs/ and configs/, relative to the repository."""
    found = [osp.join(REPO_ROOT, 'README.md')]
    for folder in ('docs', 'configs'):
        found += glob.glob(osp.join(REPO_ROOT, folder, '**', '*.md'), recursive=True)
    return sorted(osp.relpath(p, REPO_ROOT) for p in found if osp.isfile(p))


def link_targets(text):
    """(line number, target) of each link in Markdown ``text``, outside code."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        prose = INLINE_CODE.sub('', line)
        for match in INLINE_LINK.finditer(prose):
            yield number, match.group(1)
        definition = REFERENCE_DEFINITION.match(prose)
        if definition:
            yield number, definition.group(1)


def broken_links(path, root=REPO_ROOT):
    """``file:line: target`` for each relative link of ``path`` (under ``root``) that is broken."""
    with open(osp.join(root, path), encoding='utf-8') as f:
        text = f.read()
    broken = []
    for number, target in link_targets(text):
        if target.startswith(SKIPPED_SCHEMES) or target.startswith('#'):
            continue
        file_part = unquote(target.split('#', 1)[0].split('?', 1)[0])
        resolved = osp.normpath(osp.join(root, osp.dirname(path), file_part))
        if not osp.exists(resolved):
            broken.append(f'{path}:{number}: {target}')
    return broken


def test_the_markdown_is_found():
    files = markdown_files()
    assert 'README.md' in files and 'configs/README.md' in files
    assert any(p.startswith('docs/') for p in files)


@pytest.mark.parametrize('path', markdown_files())
def test_every_relative_link_resolves(path):
    broken = broken_links(path)
    assert not broken, 'links to files that do not exist:\n' + '\n'.join(broken)


def test_a_broken_link_is_reported_and_code_or_web_links_are_not(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'there.md').write_text('# there\n')
    (tmp_path / 'docs' / 'page.md').write_text(
        '[ok](there.md) [ok with anchor](there.md#there) [up](../docs/there.md)\n'
        '![missing picture](img/none.png) and [gone](gone.md#x)\n'
        '[web](https://example.com/x.md) [mail](mailto:a@b.c) [anchor](#here)\n'
        '`[not a link](nowhere.md)`\n'
        '```python\nx = [a](nowhere.md)\n```\n'
        '[ref]: missing_ref.md\n'
    )
    assert broken_links('docs/page.md', root=str(tmp_path)) == [
        'docs/page.md:2: img/none.png',
        'docs/page.md:2: gone.md#x',
        'docs/page.md:8: missing_ref.md',
    ]
