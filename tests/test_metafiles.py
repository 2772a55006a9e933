"""The model index (``model-index.yml`` and ``configs/*/metafile.yml``) matches the recipes.

OpenMMLab's model index, as mmpretrain's ``.dev_scripts/check_metafile.py`` checks it: every
metafile is imported by the root ``model-index.yml``, has one Collection with a Name, a Paper
with a Title and a README that exists, and Models with a Name, an ``In Collection``, Metadata and
a Config that exists. On top of that, for crd_mm:

* every recipe under the method folders (``cifar100/`` included, Python and YAML) is listed,
  exactly once;
* each published number of the index (the student's Results, the teachers' and students' own
  numbers) is the number that configs/README.md gives for that recipe, read here from its
  tables, and a recipe without a published number there has no Results;
* each folder's README has one row per listed recipe with that number, and configs/README.md
  links each folder's README.
"""

import os
import os.path as osp
import re

import pytest
import yaml

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FOLDERS = ('crd', 'dcd', 'crcd', 'ckd', 'ensemble', 'crossmodal', 'detection', 'segmentation')
NO_NUMBER = ('—', '--')
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def read_yaml(rel):
    with open(osp.join(REPO_ROOT, rel)) as f:
        return yaml.safe_load(f)


def recipes_on_disk(folder):
    """Every recipe file under configs/<folder>, as paths relative to the repository root."""
    found = []
    for root, _, files in os.walk(osp.join(REPO_ROOT, 'configs', folder)):
        for name in files:
            if name.endswith(('.py', '.yaml')) and not name.startswith('_'):
                found.append(osp.relpath(osp.join(root, name), REPO_ROOT))
    return sorted(found)


def table_rows(readme_path):
    """{linked config path (relative to the README's folder): the row's cells} of a README."""
    rows = {}
    with open(readme_path) as f:
        for line in f:
            if not line.startswith('|'):
                continue
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            for link in LINK.findall(line):
                if link.endswith(('.py', '.yaml')):
                    rows[link] = cells
    return rows


def numbers(cell):
    """'71.17/90.13' -> {'Top 1 Accuracy': 71.17, 'Top 5 Accuracy': 90.13}; '—' -> None."""
    if cell in NO_NUMBER:
        return None
    keys = ('Top 1 Accuracy', 'Top 5 Accuracy')
    return {k: float(v) for k, v in zip(keys, cell.replace(' ', '').split('/'))}


def docs_text():
    texts = []
    for root, _, files in os.walk(osp.join(REPO_ROOT, 'docs')):
        for name in files:
            if name.endswith('.md'):
                with open(osp.join(root, name)) as f:
                    texts.append(f.read())
    return texts


@pytest.fixture(scope='module')
def index():
    return read_yaml('model-index.yml')


@pytest.fixture(scope='module')
def metafiles():
    return {folder: read_yaml(f'configs/{folder}/metafile.yml') for folder in FOLDERS}


@pytest.fixture(scope='module')
def published():
    """configs/README.md's tables: {recipe path from the repo root: its "paper" cell}."""
    rows = table_rows(osp.join(REPO_ROOT, 'configs', 'README.md'))
    return {osp.join('configs', link): cells[-2] for link, cells in rows.items()}


def all_models(metafiles):
    return [(folder, m) for folder, meta in metafiles.items() for m in meta['Models']]


def test_model_index_imports_every_metafile(index):
    imports = index['Import']
    assert sorted(imports) == sorted(f'configs/{f}/metafile.yml' for f in FOLDERS)
    on_disk = sorted(
        osp.relpath(osp.join(root, 'metafile.yml'), REPO_ROOT)
        for root, _, files in os.walk(osp.join(REPO_ROOT, 'configs'))
        if 'metafile.yml' in files
    )
    assert on_disk == sorted(imports), 'a metafile.yml under configs/ is not imported'


@pytest.mark.parametrize('folder', FOLDERS)
def test_collection_fields(folder, metafiles):
    collections = metafiles[folder]['Collections']
    assert len(collections) == 1, 'one metafile, one collection (as mmpretrain checks)'
    c = collections[0]
    assert c['Name']
    assert c['Paper']['Title'] and c['Paper']['URL'].startswith('https://')
    assert c['README'] == f'configs/{folder}/README.md'
    assert osp.isfile(osp.join(REPO_ROOT, c['README'])), c['README']
    assert osp.isfile(osp.join(REPO_ROOT, c['Code']['URL'])), c['Code']['URL']


@pytest.mark.parametrize('folder', FOLDERS)
def test_every_recipe_is_listed_once_and_every_config_exists(folder, metafiles):
    listed = [m['Config'] for m in metafiles[folder]['Models']]
    assert len(listed) == len(set(listed)), 'a config is listed twice'
    missing = [p for p in listed if not osp.isfile(osp.join(REPO_ROOT, p))]
    assert not missing, f'listed but not on disk: {missing}'
    unlisted = sorted(set(recipes_on_disk(folder)) - set(listed))
    assert not unlisted, f'recipes missing from configs/{folder}/metafile.yml: {unlisted}'


def test_model_fields_and_unique_names(metafiles):
    names = [m['Name'] for _, m in all_models(metafiles)]
    assert len(names) == len(set(names)), 'model names must be unique across the index'
    for folder, m in all_models(metafiles):
        collection = metafiles[folder]['Collections'][0]['Name']
        assert m['In Collection'] == collection, m['Name']
        assert m['Metadata']['Training Data'], m['Name']
        assert 'Weights' not in m, f'{m["Name"]}: weights come only with a run of the recipe'
        for result in m.get('Results', []):
            assert isinstance(result['Task'], str) and isinstance(result['Dataset'], str)
            assert result['Metrics'] and all(
                isinstance(v, float) for v in result['Metrics'].values()
            ), m['Name']
        # the teachers' and students' configs named in the metadata exist
        meta = m['Metadata']
        nets = meta.get('Teachers', []) + [meta.get('Teacher', {}), meta.get('Student', {})]
        for net in nets:
            cfg = net.get('Config', '')
            if cfg.startswith('configs/'):
                assert osp.isfile(osp.join(REPO_ROOT, cfg)), f'{m["Name"]}: {cfg}'


def test_results_are_the_published_numbers_of_configs_readme(metafiles, published):
    for _, m in all_models(metafiles):
        config = m['Config']
        twin = m['Metadata'].get('Twin Of')
        if twin is not None:  # a YAML twin has its Python recipe's number
            assert osp.splitext(twin)[0] == osp.splitext(config)[0], m['Name']
        key = config if config in published else twin
        assert key in published, f'{config} has no row in configs/README.md'
        expected = numbers(published[key])
        got = m['Results'][0]['Metrics'] if 'Results' in m else None
        assert got == expected, f'{m["Name"]}: {got} != configs/README.md {published[key]}'


def test_teacher_and_student_numbers_are_those_of_configs_readme(metafiles, published):
    for _, m in all_models(metafiles):
        meta = m['Metadata']
        nets = meta.get('Teachers', []) + [meta.get('Teacher', {}), meta.get('Student', {})]
        for net in nets:
            if 'Metrics' not in net:
                continue
            cfg = net['Config']
            if cfg in published:  # our CIFAR-100 teacher and student configs
                assert net['Metrics'] == numbers(published[cfg]), f'{m["Name"]}: {cfg}'
            else:  # mmpretrain's released ResNet-34, whose top-1 configs/README.md quotes
                assert cfg == 'mmpretrain::resnet/resnet34_8xb32_in1k.py', cfg
                text = open(osp.join(REPO_ROOT, 'configs', 'README.md')).read()
                assert f'top-1 {net["Metrics"]["Top 1 Accuracy"]:.2f}' in text


@pytest.mark.parametrize('folder', FOLDERS)
def test_folder_readme_rows_match_the_metafile(folder, metafiles):
    readme = osp.join(REPO_ROOT, 'configs', folder, 'README.md')
    rows = table_rows(readme)
    text = open(readme).read()
    assert '```bibtex' in text and '## Abstract' in text
    for m in metafiles[folder]['Models']:
        link = osp.relpath(m['Config'], f'configs/{folder}')
        assert link in rows, f'{readme} has no row for {link}'
        paper, ours = rows[link][-3], rows[link][-2]
        expected = m['Results'][0]['Metrics'] if 'Results' in m else None
        assert numbers(paper) == expected, f'{link}: {paper}'
        if ours != '--':  # a number of ours only where docs/ report the run
            stem = osp.splitext(osp.basename(link))[0]
            assert any(stem in doc and ours in doc for doc in docs_text()), f'{link}: {ours}'
    listed = {osp.relpath(m['Config'], f'configs/{folder}') for m in metafiles[folder]['Models']}
    extra = set(rows) - listed
    assert not extra, f'rows for recipes the metafile does not list: {extra}'


def test_configs_readme_links_every_folder_readme():
    links = set(LINK.findall(open(osp.join(REPO_ROOT, 'configs', 'README.md')).read()))
    missing = [f for f in FOLDERS if f'{f}/README.md' not in links]
    assert not missing, f'configs/README.md does not link {missing}'


def test_modelindex_loads_the_index_as_mim_search_does():
    """The library mim uses reads the index: all models, each in a collection with a README."""
    from modelindex.load_model_index import load  # installed with openmim

    mi = load(osp.join(REPO_ROOT, 'model-index.yml'))
    mi.build_models_with_collections()
    listed = sum(len(recipes_on_disk(f)) for f in FOLDERS)
    assert len(mi.models) == listed
    readmes = {c.name: c.readme for c in mi.collections}
    assert len(readmes) == len(FOLDERS)
    for model in mi.models:
        assert osp.isfile(osp.join(REPO_ROOT, readmes[model.in_collection])), model.name
        assert osp.isfile(osp.join(REPO_ROOT, model.config)), model.name
