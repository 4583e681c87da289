"""The result files that chapters 8, 9 and 11 read ship inside the package (no checkout needed)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pandas as pd
import pytest

from dilran_lite.errors import UserError
from dilran_lite.experiments import RELEASED_MEASURED, shipped_results
from dilran_lite.metrics import PAPER_METRICS

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("series", "paper")


def test_every_table_of_chapter_9_is_there_with_every_paper_metric() -> None:
    summary = json.loads(shipped_results("summary.json").read_text())
    assert not summary["quick"] and set(summary["splits"]) == set(SPLITS)
    for split in SPLITS:
        for name in ("table1", "table2", "table3", "gap", "w2", "selection"):
            df = pd.read_csv(shipped_results(f"{name}_{split}.csv"))
            assert len(df) > 0
        for name in ("table1", "table2", "table3"):
            cols = pd.read_csv(shipped_results(f"{name}_{split}.csv")).columns
            assert set(PAPER_METRICS) <= set(cols), (name, split)
        assert shipped_results(f"fusion_grid_{split}.png").stat().st_size > 0


def test_benchmarks_of_chapters_8_and_11_are_there() -> None:
    for name in ("speed.json", "speed_cuda.json", "metrics.json"):
        assert "machine" in json.loads(shipped_results(f"benchmarks/{name}").read_text())


def test_quoted_rows_are_the_released_code_measurements() -> None:
    t2 = pd.read_csv(shipped_results("table2_series.csv"))
    quoted = t2[t2["source"].str.startswith("quoted")]
    expected = {r["method"]: r["PSNR"] for r in RELEASED_MEASURED if r["split"] == "series"}
    assert dict(zip(quoted["method"], quoted["PSNR"])) == pytest.approx(expected)


def test_no_shipped_file_cites_what_a_reader_cannot_see() -> None:
    for path in shipped_results().rglob("*"):
        if path.suffix in {".csv", ".json"}:
            text = path.read_text()
            for word in ("NOTES.md", "../shared", "/" + "work/", "TEMPORARY"):  # no machine path
                assert word not in text, (path.name, word)


def test_package_data_covers_every_shipped_file() -> None:
    """What pyproject.toml puts into the wheel: every file of dilran_lite/results."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["dilran_lite"]
    folder = shipped_results()
    for path in folder.rglob("*"):
        if path.is_file():
            rel = path.relative_to(folder.parent).as_posix()
            assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


def test_an_unknown_name_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not among the shipped results"):
        shipped_results("table9_series.csv")
