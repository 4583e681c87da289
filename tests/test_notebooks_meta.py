"""The chapter notebooks as committed: generated first cells, one repository URL, and outputs
executed in full mode on the atlas (`make execute`), with the page saying so."""

from __future__ import annotations

import importlib.util
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
