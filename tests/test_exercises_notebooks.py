"""The build-it-yourself exercises (chapters 2-8 and 12), run as a student and as the answer key.

Every notebook is executed twice in quick mode: with the scaffolds as shipped (each check cell,
tagged ``exercise-check``, must say "not done yet", with no traceback), and with
``DILRAN_SOLUTIONS=1`` (the folded solution cells run, and every check must pass)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from dilran_lite.exercises.checks import EXERCISES

REPO = Path(__file__).resolve().parents[1]
#: the chapters the grader's registry has exercises for
CHAPTERS = sorted(p for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")
                  if int(p.name[:2]) in {e.chapter for e in EXERCISES})


def _tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


def _text(cell) -> str:
    return "".join(
        o.get("text", "") if o.get("output_type") == "stream" else f"{o.get('ename')}\n"
        for o in cell.get("outputs", [])
    )


def test_every_chapter_with_exercises_is_covered():
    assert [p.name[:2] for p in CHAPTERS] == ["02", "03", "04", "05", "06", "07", "08", "12"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_exercise_cells_are_laid_out(path):
    """scaffold -> folded solution (not run unless asked) -> check, in that order."""
    nb = nbformat.read(path, as_version=4)
    checks = _tagged(nb, "exercise-check")
    assert checks, f"{path.name} has no exercise check cell"
    for cell in checks:
        i = nb.cells.index(cell)
        solution, scaffold = nb.cells[i - 1], nb.cells[i - 2]
        assert "exercise-scaffold" in scaffold.metadata.get("tags", [])
        assert "raise NotImplementedError" in scaffold.source
        assert "exercise-solution" in solution.metadata.get("tags", [])
        assert "hide-input" in solution.metadata["tags"]
        assert solution.metadata["jupyter"]["source_hidden"] is True
        assert solution.metadata["cellView"] == "form"
        assert solution.source.startswith("#@title Solution")
        assert "if solutions_enabled():" in solution.source


def _execute(path: Path, solutions: bool, monkeypatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    monkeypatch.setenv("DILRAN_QUICK", "1")
    monkeypatch.setenv("DILRAN_SOLUTIONS", "1" if solutions else "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("solutions", [False, True], ids=["scaffolds", "solutions"])
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_checks_report_not_done_then_pass(path, solutions, monkeypatch):
    nb = _execute(path, solutions, monkeypatch)  # raises if any cell raises
    for cell in _tagged(nb, "exercise-check"):
        out = _text(cell)
        assert "Traceback" not in out
        if solutions:
            assert ": passed:" in out, out
        else:
            assert ": not done yet:" in out and "still raises NotImplementedError" in out, out
