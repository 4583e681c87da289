"""The setup cell on Colab (a stand-in ``google.colab``): a failed install stops the notebook with
one line; and the course copies of scripts/make_course.py carry a course's install source and
mirror in every setup cell, leaving the book's notebooks alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
STAND_IN = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sync():
    return _script("sync_notebooks")


def _run(cells: list[str], folder: Path) -> tuple[nbformat.NotebookNode, Exception | None]:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    try:
        client.execute()
    except CellExecutionError as err:
        return nb, err
    return nb, None


def test_failed_install_stops_with_one_line(sync, tmp_path: Path) -> None:
    """An install source that does not exist: the setup cell ends in one error line naming it
    and what to do, and the cell after it never runs."""
    missing = str(tmp_path / "nowhere" / "dilran_lite-0.0.0-py3-none-any.whl")
    url, branch = sync.config()
    setup = sync.setup_source(url, branch, ("mri-ct",), install=missing)
    nb, err = _run([STAND_IN, setup, "print('the next cell ran')"], tmp_path)
    assert err is not None, "the notebook ran to its end"
    outputs = nb.cells[1].outputs
    errors = [o for o in outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "SetupFailed"
    (line,) = errors[0].traceback  # one line, no traceback
    assert line.startswith(f"SetupFailed: could not install dilran-lite from {missing!r}")
    assert "set INSTALL to a wheel URL" in line and "course's copy" in line
    assert not any(o.output_type == "stream" for o in outputs)  # setup() did not run
    assert nb.cells[2].outputs == [] and nb.cells[2].get("execution_count") is None


def test_setup_cell_never_forces_colab_packages(sync) -> None:
    """Colab's torch and ipywidgets are never upgraded or reinstalled by the setup cell."""
    source = sync.setup_source(*sync.config(), ("mri-ct",), install="x.whl", mirror="http://m/")
    for flag in ("--upgrade", "-U ", "--force-reinstall", "--no-deps", "%pip"):
        assert flag not in source
    compile(source, "setup", "exec")  # plain Python: no IPython magic
    assert 'INSTALL = "x.whl"' in source and 'MIRROR = "http://m/"' in source
