"""dilran_lite.notebook: the setup cell of every chapter (mode, atlas or phantom, one run line)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import nbformat
import pytest

from dilran_lite import __version__, notebook
from dilran_lite.notebook import default_weights, describe, run_info, setup

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_atlas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DILRAN_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DILRAN_MIRROR", raising=False)
    monkeypatch.delenv("DILRAN_FETCH", raising=False)
    monkeypatch.delenv("DILRAN_QUICK", raising=False)  # restored after the test, even if set
    monkeypatch.setattr(notebook, "_SESSION", {"warned": False, "picked": None})
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


@pytest.mark.parametrize(
    ("gpu", "quick", "mode", "line"),
    [
        (False, None, "quick", "Quick mode (no GPU here, and DILRAN_QUICK is not set)"),
        (True, None, "full", "Full mode (a GPU is here)"),
        (False, "0", "full", "Full mode (DILRAN_QUICK=0)"),
        (True, "1", "quick", "Quick mode (DILRAN_QUICK=1)"),
    ],
    ids=["cpu-unset", "gpu-unset", "cpu-asks-full", "gpu-asks-quick"],
)
def test_mode_fits_the_hardware(no_atlas, monkeypatch, capsys, gpu, quick, mode, line) -> None:
    """DILRAN_QUICK unset: quick mode without a GPU, full mode with one, and the first line says
    why and how to ask for the other; a value the reader set always wins."""
    monkeypatch.setattr(notebook, "_gpu", lambda: gpu)
    monkeypatch.setattr(notebook, "_device_name", lambda: "GPU (test)" if gpu else "CPU")
    if quick is not None:
        monkeypatch.setenv("DILRAN_QUICK", quick)
    for _ in range(2):  # the second run of the setup cell says the same
        info = setup(fetch=False)
        first = capsys.readouterr().out.splitlines()[0]
        assert info["mode"] == mode and first.startswith(line + ":")
        other = "0" if mode == "quick" else "1"
        assert f'os.environ["DILRAN_QUICK"] = "{other}"' in first
    assert notebook.quick_mode() is (mode == "quick")  # what the chapter's later cells read


def test_setup_offline_warns_once_and_uses_phantom(no_atlas: Path, monkeypatch, capsys) -> None:
    """Offline: one short warning per session naming DILRAN_MIRROR; the other atlases are not
    tried after the first fails, and a second setup() does not warn again."""
    monkeypatch.setenv("DILRAN_QUICK", "1")
    monkeypatch.setenv("DILRAN_MIRROR", "http://127.0.0.1:9/")  # nothing listens there
    tried = []
    real = notebook.download_atlas
    monkeypatch.setattr(notebook, "download_atlas", lambda **kw: tried.append(kw) or real(**kw))
    with pytest.warns(UserWarning) as caught:
        info = setup(pairs=("mri-ct", "mri-pet"))
    (warning,) = [w for w in caught if "DILRAN_MIRROR" in str(w.message)]
    text = str(warning.message)
    assert "runs on the synthetic phantom" in text and "http://127.0.0.1:9/" in text
    assert len(text) < 300
    assert [kw["pairs"] for kw in tried] == ["mri-ct"]
    assert info["data"] == "phantom"
    out = capsys.readouterr().out.splitlines()
    assert any(
        ln.startswith("Fetching the harvard-mri-ct atlas (184 pairs; each file") for ln in out
    )
    assert "No harvard-mri-pet atlas here" in "\n".join(out)
    assert out[-1] == describe(info)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup(pairs=("mri-ct",))  # a second chapter in the same session: no second warning


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


def test_quick_mode_fetches_only_the_colour_pairs_it_uses(
    no_atlas: Path, shared_data: Path, monkeypatch, capsys
) -> None:
    """Quick mode: of a colour atlas only the first pairs of series/test are fetched (the bar and
    the line count pairs), and the chapter's loaders read exactly those; full mode wants all."""
    from dilran_lite.data import QUICK_COLOUR_PAIRS, load_pairs, quick_names

    monkeypatch.setenv("DILRAN_MIRROR", shared_data.as_uri())
    monkeypatch.setenv("DILRAN_QUICK", "1")
    monkeypatch.setattr(notebook, "atlas_present", _present_or_skip_ct(notebook.atlas_present))
    info = setup(pairs=("mri-ct", "mri-pet"))
    out = capsys.readouterr()
    names = quick_names("mri-pet")
    assert len(names) == QUICK_COLOUR_PAIRS
    assert f"mri-pet atlas ({QUICK_COLOUR_PAIRS} of its 269 pairs, for quick mode" in out.out
    fetched = sorted(p.name for p in (no_atlas / "harvard-mri-pet" / "PET").glob("*.png"))
    assert fetched == sorted(names) and info["data"] == "atlas"
    assert f"{QUICK_COLOUR_PAIRS}/{QUICK_COLOUR_PAIRS}" in out.err  # the bar counts pairs
    ds = load_pairs("mri-pet", "series/test", limit=QUICK_COLOUR_PAIRS)
    assert list(ds.names) == names
    monkeypatch.setenv("DILRAN_QUICK", "0")
    assert not notebook.atlas_present("mri-pet", notebook.chapter_names("mri-pet"))


def _present_or_skip_ct(real):
    """atlas_present, with MRI-CT taken as present (the test fetches only the colour pairs)."""
    return lambda pairs="mri-ct", names=None: pairs == "mri-ct" or real(pairs, names)


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


def test_widget_state_dropped_when_no_shown_cell_displays_a_widget() -> None:
    ex = _execute_script()
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "ab" * 16}}

    def notebook(tags: list[str]) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.metadata["widgets"] = {ex.WIDGET_STATE: {"state": {"ab" * 16: {}}}}
        cell = nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data",
                                                                         data=view)])
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
        return nb

    assert "widgets" not in ex.drop_unshown_widget_state(notebook(["remove-cell"])).metadata
    assert "widgets" not in ex.drop_unshown_widget_state(notebook(["remove-output"])).metadata
    assert "widgets" in ex.drop_unshown_widget_state(notebook(["hide-input"])).metadata


def test_partial_atlas_is_not_the_atlas(no_atlas: Path, shared_data: Path, monkeypatch) -> None:
    """A download that stopped part-way leaves the folders and a few files: the chapter does not
    claim the atlas, and fetches again."""
    from dilran_lite.download import load_manifest
    from dilran_lite.notebook import atlas_present

    man = load_manifest("mri-ct")
    for rel in list(man["sha256"])[:3] + list(man["sha256"])[-3:]:  # a few CT and MRI files
        dst = no_atlas / man["dataset"] / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((shared_data / man["dataset"] / rel).read_bytes())
    assert not atlas_present("mri-ct")
    monkeypatch.setenv("DILRAN_FETCH", "0")
    assert setup()["data"] == "phantom"
