"""The chapter notebooks as committed: generated first cells, one repository URL, and outputs
executed in full mode on the atlas (`make execute`), with the page saying so."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

from dilran_lite.notebook import describe

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
IDS = [p.stem for p in CHAPTERS]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sync():
    return _script("sync_notebooks")


def _setup_cell(nb) -> tuple[int, nbformat.NotebookNode]:
    found = [(i, c) for i, c in enumerate(nb.cells) if "dilran_setup" in c.metadata]
    assert len(found) == 1, f"expected one setup cell, found {len(found)}"
    return found[0]


def test_generated_parts_agree_with_config(sync) -> None:
    """Badges, setup cells, README and running.md name the URL of _config.yml (else: run
    `python scripts/sync_notebooks.py`)."""
    url, branch = sync.config()
    assert sync.disagreements(url, branch) == []


def test_sync_rewrites_a_changed_url(sync, tmp_path: Path) -> None:
    nb_path = tmp_path / CHAPTERS[0].name
    nb_path.write_bytes(CHAPTERS[0].read_bytes())
    assert not sync.sync_notebook(nb_path, *sync.config())
    assert sync.sync_notebook(nb_path, "https://github.com/someone/else", "dev")
    text = nb_path.read_text()
    assert "github/someone/else/blob/dev/notebooks/" in text
    assert "git+https://github.com/someone/else@dev" in text
    readme = tmp_path / "README.md"
    readme.write_text(
        'pip install "x @ git+https://github.com/a/b@main"\ngit clone https://github.com/a/b\n'
    )
    assert sync.sync_text(readme, "https://github.com/c/d", "main")
    assert readme.read_text() == (
        'pip install "x @ git+https://github.com/c/d@main"\ngit clone https://github.com/c/d\n'
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_first_cells(path: Path) -> None:
    """Badge first (hidden in the book), then the title, then the setup cell before any code."""
    nb = nbformat.read(path, as_version=4)
    assert "colab-badge" in nb.cells[0].source
    assert nb.cells[0].metadata.get("tags") == ["remove-cell"]
    index, cell = _setup_cell(nb)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert index == first_code
    assert cell.metadata.get("tags") == ["remove-input"]
    assert "from dilran_lite.notebook import setup" in cell.source


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_committed_outputs_are_full_mode_on_the_atlas(path: Path) -> None:
    """The published pages: `make execute` (full mode, atlas) recorded in metadata.dilran, and the
    setup cell's output ends with the same line."""
    nb = nbformat.read(path, as_version=4)
    info = nb.metadata.get("dilran")
    assert info, f"{path.name} has no metadata.dilran: re-execute it with `make execute`"
    assert info["mode"] == "full", f"{path.name} was executed in {info['mode']} mode"
    assert info["data"] == "atlas", f"{path.name} was executed on the {info['data']}"
    _, cell = _setup_cell(nb)
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines and lines[-1] == describe(info), f"{path.name}: setup output {lines[-1:]}"


ANY_ROLE = re.compile(r"\{[a-z][\w:-]*\}`")
LINK = re.compile(r"\]\(([^()\s]+)\)")


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_no_myst_role_in_markdown_cells(path: Path) -> None:
    """Jupyter and Colab show a MyST role as raw text: the chapters use plain Markdown links
    (`python scripts/rewrite_roles.py` rewrites them)."""
    nb = nbformat.read(path, as_version=4)
    bad = [
        (i, m.group(0))
        for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown"
        for m in ANY_ROLE.finditer(c.source)
    ]
    assert bad == [], f"{path.name}: MyST roles in markdown cells (index, role): {bad[:5]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_relative_links_resolve_in_the_book(path: Path) -> None:
    """Every relative link of a markdown cell names a file that exists; a page link names a
    page of the book (`_toc.yml`), with no #anchor (the book resolves only heading anchors, and
    `myst_heading_anchors` is off: an anchor is a build warning)."""
    toc = (REPO / "_toc.yml").read_text(encoding="utf-8")
    nb = nbformat.read(path, as_version=4)
    targets = {
        t
        for c in nb.cells
        if c.cell_type == "markdown"
        for t in LINK.findall(c.source)
        if not re.match(r"[a-z]+:", t) and not t.startswith("#") and "/" in t
    }
    for target in sorted(targets):
        file, _, anchor = target.partition("#")
        page = (path.parent / file).resolve()
        assert page.is_file(), f"{path.name}: link to {target}, no such file"
        if page.suffix in (".md", ".ipynb"):
            doc = page.relative_to(REPO).with_suffix("").as_posix()
            assert f"file: {doc}\n" in toc, f"{path.name}: {target} is not a page of the book"
            assert not anchor, f"{path.name}: {target}: the book does not resolve that anchor"


def test_rewrite_roles_known_values() -> None:
    roles = _script("rewrite_roles")
    text = (
        "{term}`MRI`, {term}`dilated convolutions <Dilated convolution>`, "
        "{cite:p}`simonyan2015vgg,summers2003atlas`, {cite:t}`zhou2022dilran`, "
        "{doc}`../book/released_code`, {ref}`data-location`."
    )
    assert roles.rewrite(text) == (
        "[MRI](../book/glossary.md), [dilated convolutions](../book/glossary.md), "
        "([Simonyan and Zisserman 2015](../book/references.md); "
        "[Summers 2003](../book/references.md)), [Zhou et al. (2022)](../book/references.md), "
        "[The released DILRAN code, measured](../book/released_code.md), "
        "[Where the data lives](../book/running.md)."
    )
    with pytest.raises(SystemExit, match="not in book/references.bib"):
        roles.rewrite("{cite:p}`nobody1900`")
