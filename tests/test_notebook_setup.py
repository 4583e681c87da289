"""dilran_lite.notebook: the setup cell of every chapter (mode, atlas or phantom, one run line)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

from dilran_lite import __version__
from dilran_lite.notebook import default_weights, describe, run_info, setup

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_atlas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DILRAN_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DILRAN_MIRROR", raising=False)
    monkeypatch.delenv("DILRAN_FETCH", raising=False)
    return tmp_path / "data"


def test_run_info_and_line(no_atlas: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DILRAN_QUICK", "1")
    info = run_info()
    assert info["mode"] == "quick" and info["data"] == "phantom"
    assert info["weights"] == default_weights(True) == "dilran-lite"
    assert info["version"] == __version__
    line = describe(info)
    assert line.startswith("Executed in quick mode on the synthetic phantom")
    full = describe({**info, "mode": "full", "data": "atlas", "weights": "dilran-paper"})
    assert "full mode on the Harvard atlas (MRI-CT pairs) with the dilran-paper weights" in full


def test_setup_without_fetch_says_phantom(no_atlas: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DILRAN_QUICK", "0")
    monkeypatch.setenv("DILRAN_FETCH", "0")
    info = setup()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Full mode") and "DILRAN_QUICK" in out[0]
    assert "synthetic phantom" in out[1]
    assert out[-1] == describe(info)
    assert not no_atlas.exists()


def test_setup_offline_warns_and_uses_phantom(no_atlas: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DILRAN_MIRROR", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.warns(UserWarning, match="runs on the synthetic phantom"):
        info = setup(pairs=("mri-ct",))
    assert info["data"] == "phantom"
    assert capsys.readouterr().out.splitlines()[-1] == describe(info)


def test_setup_fetches_from_a_mirror(no_atlas: Path, shared_data: Path, monkeypatch) -> None:
    """A mirror laid out like the data root (a file:// URL here) fills the missing atlas."""
    from dilran_lite.download import load_manifest

    man = load_manifest("mri-ct")
    mirror = no_atlas.parent / "mirror"
    for rel in man["sha256"]:
        src = shared_data / man["dataset"] / rel
        dst = mirror / man["dataset"] / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    monkeypatch.setenv("DILRAN_MIRROR", mirror.as_uri())
    info = setup()
    assert info["data"] == "atlas"
    assert (no_atlas / man["dataset"] / "splits.json").is_file()


def _execute_script():
    spec = importlib.util.spec_from_file_location(
        "execute_notebooks", REPO / "scripts" / "execute_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_widget_ids_renumbered_in_order() -> None:
    ex = _execute_script()
    a, b = "ab" * 16, "cd" * 16
    nb = nbformat.v4.new_notebook()
    state = {a: {"state": {"children": [f"IPY_MODEL_{b}"]}}, b: {"state": {}}}
    nb.metadata["widgets"] = {ex.WIDGET_STATE: {"state": state, "version_major": 2}}
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": a}}
    nb.cells.append(
        nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", data=view)])
    )
    out = ex.renumber_widgets(nb)
    one, two = f"{1:032x}", f"{2:032x}"
    new_state = out.metadata["widgets"][ex.WIDGET_STATE]["state"]
    assert list(new_state) == [one, two]
    assert new_state[one]["state"]["children"] == [f"IPY_MODEL_{two}"]
    model = out.cells[0].outputs[0].data["application/vnd.jupyter.widget-view+json"]
    assert model["model_id"] == one
