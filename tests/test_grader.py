"""The grader: verdicts it computes itself, whatever a hand-in prints, saves, sets or patches.

Hand-ins are copies of chapter 8's notebook (two exercises, numpy only) with the exercise cells
edited; every cheat must earn no pass, leave the package unchanged and leave the other rows alone.
"""

from __future__ import annotations

import csv
import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from dilran_lite import exercises as ex
from dilran_lite.exercises.grader import exercise_cells

REPO = Path(__file__).resolve().parents[1]
CH8 = REPO / "notebooks" / "08_metrics.ipynb"
IDS = [e.id for e in ex.EXERCISES]

RIGHT_ENTROPY = """
import numpy as np

def my_entropy(f):
    counts = np.bincount(f.ravel(), minlength=256)
    p = counts[counts > 0] / f.size
    return float(-(p * np.log2(p)).sum())
"""
NATS_ENTROPY = RIGHT_ENTROPY.replace("np.log2(p)", "np.log(p)")


def _package_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((REPO / "dilran_lite").rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()


def _hand_in(path: Path, entropy: str, extra_cells: list[dict] | None = None) -> None:
    """Chapter 8 with the first exercise cell replaced by ``entropy`` (the second left as is)."""
    nb = json.loads(CH8.read_text())
    scaffolds = [c for c in nb["cells"] if "exercise-scaffold" in c["metadata"].get("tags", [])]
    scaffolds[0]["source"] = textwrap.dedent(entropy)
    nb["cells"] += extra_cells or []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))


def _output_cell(text: str, tags: list[str]) -> dict:
    return {"cell_type": "code", "execution_count": 1, "id": "cheat", "metadata": {"tags": tags},
            "source": f"print({text!r})",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": text + "\n"}]}


def _grade(folder: Path, tmp: Path, **kw) -> tuple[dict, dict]:
    rows = ex.grade(folder, tmp / "grades.csv", feedback=tmp / "feedback", **kw)
    with open(tmp / "grades.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["student"] for r in table] == [r["student"] for r in rows]
    assert list(table[0]) == ["student", "notebooks", *IDS, "points", "note"]
    return {r["student"]: r for r in rows}, {r["student"]: r for r in table}


def test_exercise_cells_of_the_shipped_notebook():
    cells, ids, note = exercise_cells(CH8)
    assert ids == ["entropy", "mutual_information"] and len(cells) == 2 and note == ""
    assert all("raise NotImplementedError" in c for c in cells)


def test_cheats_earn_nothing(tmp_path):
    folder = tmp_path / "hand-in"
    verdict = "exercise entropy: passed: your entropy gives the package's value"
    _hand_in(folder / "honest.ipynb", RIGHT_ENTROPY)
    _hand_in(folder / "nats.ipynb", NATS_ENTROPY)
    _hand_in(folder / "scaffold.ipynb", '''def my_entropy(f):\n    raise NotImplementedError\n''',
             [_output_cell(verdict, []), _output_cell(verdict, ["skip-execution"])])
    _hand_in(folder / "printer.ipynb", NATS_ENTROPY + f"\nprint({verdict!r})\n")
    _hand_in(folder / "switch.ipynb", "%env DILRAN_SOLUTIONS=1\nimport os\n"
             "os.environ['DILRAN_SOLUTIONS'] = '1'\n"
             "def my_entropy(f):\n    raise NotImplementedError\n")
    _hand_in(folder / "patcher.ipynb", NATS_ENTROPY + """
import dilran_lite.exercises as e
import dilran_lite.exercises.checks as c
e._compare = c._compare = lambda *a, **k: "ok"
""")
    _hand_in(folder / "late_patcher.ipynb", """
def my_entropy(f):
    import dilran_lite.exercises.checks as c
    c._compare = lambda *a, **k: "ok"
    return 0.0
""")
    _hand_in(folder / "reference.ipynb", "from dilran_lite.metrics import entropy as my_entropy\n")
    _hand_in(folder / "writer.ipynb", NATS_ENTROPY + """
from pathlib import Path
import dilran_lite.exercises.checks as c
p = Path(c.__file__)
p.write_text(p.read_text().replace("if bad.any():", "if False:"))
Path("../../escaped.txt").write_text("x")
(Path.home() / "x.txt").write_text("x")
""")
    (folder / "broken.ipynb").write_text("{ this is not json")
    (folder / "nonotebook.ipynb").write_text(json.dumps({"cells": 3}))
    before = _package_hash()
    rows, table = _grade(folder, tmp_path, timeout=300, jobs=2)
    assert _package_hash() == before
    assert not (tmp_path / "escaped.txt").exists()
    assert rows["honest"]["entropy"] == "passed" and table["honest"]["points"] == "1"
    assert rows["nats"]["entropy"] == "failed"
    assert rows["writer"]["entropy"] == "failed"  # its write reached only its own copy
    assert rows["scaffold"]["entropy"] == "not done yet"
    assert rows["printer"]["entropy"] == "failed"
    assert rows["switch"]["entropy"] == "not done yet"
    assert rows["patcher"]["entropy"] == "tampered"
    assert rows["late_patcher"]["entropy"] == "tampered"
    assert rows["reference"]["entropy"] == "reference"
    for name in ("broken", "nonotebook"):
        assert "not a notebook" in rows[name]["note"]
        assert all(rows[name][i] == "missing" for i in IDS)
    for name, r in rows.items():
        cheated = "tampered" if "patcher" in name else "not done yet"
        assert r["mutual_information"] in (cheated, "missing")
        assert all(r[i] == "missing" for i in IDS if i not in ("entropy", "mutual_information"))
    feedback = (tmp_path / "feedback" / "nats.txt").read_text()
    assert "entropy (1 points): failed" in feedback and "yours" in feedback


@pytest.mark.slow
def test_a_loop_and_a_memory_hog_end_as_rows(tmp_path):
    folder = tmp_path / "hand-in"
    _hand_in(folder / "loop.ipynb", RIGHT_ENTROPY + "while True:\n    pass\n")
    _hand_in(folder / "hog.ipynb", "x = bytearray(64 * 2**30)\n" + RIGHT_ENTROPY)
    _hand_in(folder / "honest.ipynb", RIGHT_ENTROPY)
    before = _package_hash()
    rows, _ = _grade(folder, tmp_path, timeout=25, jobs=2, memory_mb=4096)
    assert _package_hash() == before
    assert rows["loop"]["entropy"] == "timed out" and "timed out" in rows["loop"]["note"]
    assert rows["hog"]["entropy"] == "missing"  # its one cell stopped at the limit
    assert "MemoryError" in rows["hog"]["note"]
    assert rows["honest"]["entropy"] == "passed"


def test_subclassing_the_package_block_is_not_a_pass(tmp_path):
    nb = json.loads((REPO / "notebooks" / "02_residual_attention.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "exercise-scaffold" in c["metadata"].get("tags", []))
    cell["source"] = (
        "from dilran_lite.model import PRESETS, ResidualAttentionBlock as R\n"
        "class ResidualAttention(R):\n"
        "    def __init__(self, c_in, c_out, trunk_kernel=3):\n"
        "        super().__init__(c_in, c_out, PRESETS['lite'], trunk_kernel=trunk_kernel)\n"
    )
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "sub.ipynb").write_text(json.dumps(nb))
    rows, _ = _grade(tmp_path / "h", tmp_path, timeout=300, jobs=1)
    assert rows["sub"]["residual_attention"] == "reference"


def test_grade_refuses_a_missing_folder(tmp_path, capsys):
    assert ex.main(["grade", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_grade_refuses_a_memory_limit_torch_cannot_live_with(tmp_path, capsys):
    _hand_in(tmp_path / "h" / "a.ipynb", RIGHT_ENTROPY)
    assert ex.main(["grade", str(tmp_path / "h"), "--memory", "1000"]) == 2
    assert "--memory 1000 is too small" in capsys.readouterr().err


RIGHT_SHIFT_MI = """
import numpy as np

from dilran_lite.metrics import mi


def my_shift_mi(fixed, moving, shifts):
    w = fixed.shape[1]
    return np.array([mi(fixed[:, max(s, 0): w + min(s, 0)], moving[:, max(-s, 0): w - max(s, 0)])
                     for s in shifts])
"""


def test_chapters_choose_the_columns_and_the_total(tmp_path):
    """``--chapters 8,12``: only those exercises are columns; chapter 12's shift_mi is graded."""
    _hand_in(tmp_path / "h" / "ada" / "08.ipynb", RIGHT_ENTROPY)
    nb = json.loads((REPO / "notebooks" / "12_volumes.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "exercise-scaffold" in c["metadata"].get("tags", []))
    cell["source"] = RIGHT_SHIFT_MI
    (tmp_path / "h" / "ada" / "12.ipynb").write_text(json.dumps(nb))
    rows = ex.grade(tmp_path / "h", tmp_path / "g.csv", timeout=300, jobs=1, chapters="8,12",
                    feedback=tmp_path / "g-feedback")
    assert list(rows[0]) == ["student", "notebooks", "entropy", "mutual_information", "shift_mi",
                             "points", "note"]
    assert (rows[0]["entropy"], rows[0]["mutual_information"], rows[0]["shift_mi"]) == (
        "passed", "not done yet", "passed")
    assert rows[0]["points"] == "3"  # entropy 1 + shift_mi 2 of 5
    assert (tmp_path / "g-feedback" / "ada.txt").read_text().startswith("ada: 3 of 5 points")


@pytest.mark.parametrize("chapters, message", [("9", "no exercises there"),
                                               ("two", "chapter numbers and ranges")])
def test_bad_chapters_are_one_line(tmp_path, capsys, chapters, message):
    _hand_in(tmp_path / "h" / "a.ipynb", RIGHT_ENTROPY)
    assert ex.main(["grade", str(tmp_path / "h"), "--chapters", chapters]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
