"""Each chapter's **Time:** line is written from notebooks/timings.json (measured runs), and the
training chapter's runs folder says whether it outlasts a Colab session."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import nbformat
import pytest

from dilran_lite import notebook

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


@pytest.fixture(scope="module")
def sync():
    spec = importlib.util.spec_from_file_location("sync_nb", REPO / "scripts" / "sync_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sync_nb"] = module
    spec.loader.exec_module(module)
    return module


def _run(seconds: float, device: str = "CPU", cores: int = 2) -> dict:
    return {"seconds": seconds, "device": device, "cpu_cores": cores, "date": "2026-12-02"}


def test_time_line_says_each_measured_run(sync) -> None:
    runs = {
        "quick-atlas-cpu": _run(16.5),
        "quick-phantom-cpu": _run(9.4),
        "full-atlas-cpu": _run(1500),
        "full-atlas-gpu": _run(95, "GPU (NVIDIA H200)", 16),
    }
    line = sync.time_line(runs, 45)
    assert line == (
        "**Time:** On a CPU with 2 cores, quick mode 16 s with the atlas, 9 s with the built-in "
        "phantom, full mode 25 min; on a GPU (NVIDIA H200), full mode 2 min (the atlas already on "
        "disk). Working through the text and the exercises: about 45 minutes (our estimate)."
    )
    assert sync.time_line({}, 60) == (
        "**Time:** Working through the text and the exercises: about 60 minutes (our estimate)."
    )
    assert sync._duration(3 * 3600 + 125) == "3 h 2 min"


def test_sync_time_keeps_the_estimate_and_adds_a_missing_line(sync) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# T"),
        nbformat.v4.new_markdown_cell(
            "Objectives\n\n**Time:** old words. Working through the text and the exercises: "
            "about 75 minutes (our estimate).\n\nAfter."
        ),
    ]
    sync.sync_time(nb, "05_x", {"05_x": {"quick-atlas-cpu": _run(30)}})
    assert nb.cells[1].source == (
        "Objectives\n\n**Time:** On a CPU with 2 cores, quick mode 30 s with the atlas (the atlas "
        "already on disk). Working through the text and the exercises: about 75 minutes (our "
        "estimate).\n\nAfter."
    )
    bare = nbformat.v4.new_notebook()
    bare.cells = [nbformat.v4.new_markdown_cell("## Objectives\n\n- one")]
    sync.sync_time(bare, "10_y", {})
    assert bare.cells[0].source.endswith(
        "\n\n**Time:** Working through the text and the exercises: about 60 minutes (our estimate)."
    )


def test_every_chapter_has_a_time_line_with_its_measured_times(sync) -> None:
    timings = sync.load_timings()
    for path in CHAPTERS:
        text = "\n".join(
            c.source for c in nbformat.read(path, 4).cells if c.cell_type == "markdown"
        )
        line = next((ln for ln in text.splitlines() if ln.startswith("**Time:**")), None)
        assert line is not None, f"{path.name} has no **Time:** line"
        runs = timings.get(path.stem, {})
        assert "quick-atlas-cpu" in runs, f"{path.name}: no measured quick-mode run"
        assert f"quick mode {sync._duration(runs['quick-atlas-cpu']['seconds'])} with" in line
        if "full-atlas-cpu" in runs:
            assert f"full mode {sync._duration(runs['full-atlas-cpu']['seconds'])}" in line


def test_runs_folder_off_colab_and_on_colab(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert notebook.runs_folder() == Path("runs")
    assert "beside this notebook" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(notebook, "DRIVE_MOUNT", str(tmp_path / "drive"))
    assert notebook.runs_folder() == Path("runs")
    said = capsys.readouterr().out
    assert "Colab deletes when the runtime ends" in said and "MOUNT_DRIVE = True" in said
    mounted = []
    monkeypatch.setattr(
        notebook,
        "_mount_drive",
        lambda: mounted.append((tmp_path / "drive" / "MyDrive").mkdir(parents=True)),
    )
    assert notebook.runs_folder(mount_drive=True) == tmp_path / "drive" / "MyDrive" / "dilran-runs"
    assert mounted and "outlast this session" in capsys.readouterr().out
    assert notebook.runs_folder() == tmp_path / "drive" / "MyDrive" / "dilran-runs"  # mounted once
    assert len(mounted) == 1


def test_timings_table_in_running_md(sync, monkeypatch) -> None:
    first = CHAPTERS[0].stem
    run = dict(_run(16.5), load_at_start=2.17)
    table = sync.timings_table({first: {"quick-atlas-cpu": run}})
    lines = table.splitlines()
    assert lines[0] == "| chapter | quick, atlas | CPU cores |"
    assert lines[2] == f"| {first[:2]} | 16 s (2.2) | 2 |"
    assert len(lines) == 2 + len(CHAPTERS)
    text = "x\n<!-- timings:start -->\nold\n<!-- timings:end -->\ny"
    monkeypatch.setattr(sync, "load_timings", lambda: {first: {"quick-atlas-cpu": run}})
    assert sync.synced_text(text, "https://github.com/o/n", "main") == (
        f"x\n<!-- timings:start -->\n{table}<!-- timings:end -->\ny"
    )
