"""Tests of dilran_lite.evaluate: the table, the mean row, the CSV, errors, and the published
pixel-average figures of ../shared/paper/NOTES.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from skimage import io

from dilran_lite import metrics as M
from dilran_lite.evaluate import evaluate, main


def _load(root: Path, names: list[str]) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    out = []
    for name in names:
        ct = torch.from_numpy(io.imread(root / "CT" / name).astype(np.float32) / 255)[None]
        mr = torch.from_numpy(io.imread(root / "MRI" / name).astype(np.float32) / 255)[None]
        out.append((ct, mr, name))
    return out


@pytest.fixture(scope="module")
def series_test(atlas_root: Path) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    names = json.loads((atlas_root / "splits.json").read_text())["series"]["test"]
    assert len(names) == 41
    return _load(atlas_root, names)


@pytest.fixture()
def small() -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(1, 48, 48, generator=g), torch.rand(1, 48, 48, generator=g), f"p{i}")
        for i in range(3)
    ]


def test_table_rows_mean_and_csv(series_test, tmp_path):
    pairs = series_test[10:13]
    csv = tmp_path / "out" / "table.csv"
    table = evaluate("average", pairs, csv_path=csv, progress=False)
    assert list(table.columns) == list(M.METRICS)
    assert list(table.index) == [n for _, _, n in pairs] + ["mean"]
    per_image = table.drop(index="mean")
    assert np.allclose(table.loc["mean"].to_numpy(), per_image.mean().to_numpy())
    assert table.attrs["mean"] == pytest.approx(per_image.mean().to_dict())
    # each row is compute_metrics on the fused image
    a, b, name = pairs[0]
    expected = M.compute_metrics(a, b, (a + b) / 2)
    assert table.loc[name].to_dict() == pytest.approx(expected, abs=1e-12)
    back = pd.read_csv(csv, index_col="image")
    assert list(back.index) == list(table.index)
    assert np.allclose(back.to_numpy(), table.to_numpy(), rtol=1e-5)


def test_callable_method_and_metric_subset(small):
    names = ["PSNR", "EN", "Qabf"]
    by_name = evaluate("max", small, metrics=names, progress=False)
    by_fn = evaluate(lambda a, b: torch.maximum(a, b), small, metrics=names, progress=False)
    pd.testing.assert_frame_equal(by_name, by_fn)
    assert list(by_name.columns) == names
    avg = evaluate("average", small, metrics=names, progress=False)
    assert not np.allclose(avg.to_numpy(), by_name.to_numpy())


def test_fused_equal_to_a_source_gives_infinite_mean_psnr(small):
    table = evaluate(lambda a, b: a.clone(), small, metrics=["PSNR", "SSIM"], progress=False)
    assert table.loc["mean", "PSNR"] == math.inf
    assert table.loc["mean", "SSIM"] < 1.0


def test_out_of_range_output_is_clamped(small):
    table = evaluate(lambda a, b: a * 2 - 0.5, small, metrics=["EN"], progress=False)
    clamped = evaluate(
        lambda a, b: (a * 2 - 0.5).clamp(0, 1), small, metrics=["EN"], progress=False
    )
    pd.testing.assert_frame_equal(table, clamped)


def test_errors(small):
    with pytest.raises(ValueError, match="unknown built-in method"):
        evaluate("median", small, progress=False)
    with pytest.raises(TypeError, match="callable"):
        evaluate(3, small, progress=False)
    with pytest.raises(KeyError, match="unknown metric"):
        evaluate("average", small, metrics=["PSNR", "XYZ"], progress=False)
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda a, b: a[:, :10], small, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda a, b: a * float("nan"), small, progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate("average", [], progress=False)
    with pytest.raises(ValueError, match="split"):
        evaluate("average", small, split="series/test", progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        evaluate("average", small + small[:1], metrics=["EN"], progress=False)
    with pytest.raises(ValueError, match=r"\(a, b, name\)"):
        evaluate("average", [(small[0][0], small[0][1])], progress=False)


def test_pixel_average_reproduces_the_published_figures(series_test):
    """NOTES.md: pixel average on series/test gives PSNR 15.19 dB, EN 3.96 bits, MI 3.45 bits.

    The tolerance (0.05) covers how the half-integer averages are rounded to 8 bits."""
    table = evaluate("average", series_test, metrics=["PSNR", "EN", "MI"], progress=False)
    assert len(table) == 42
    mean = table.attrs["mean"]
    assert mean["PSNR"] == pytest.approx(15.19, abs=0.05)
    assert mean["EN"] == pytest.approx(3.96, abs=0.05)
    assert mean["MI"] == pytest.approx(3.45, abs=0.05)


def test_named_dataset_and_command_line(atlas_root, tmp_path, capsys):
    data = pytest.importorskip("dilran_lite.data")
    if not hasattr(data, "PairedDataset"):
        pytest.skip("dilran_lite.data.PairedDataset not available")
    csv = tmp_path / "cli.csv"
    code = main(
        [
            "--dataset",
            str(atlas_root),
            "--split",
            "paper/test",
            "--metrics",
            "PSNR",
            "EN",
            "--csv",
            str(csv),
            "--no-progress",
        ]
    )
    assert code == 0
    back = pd.read_csv(csv, index_col="image")
    assert len(back) == 21 and back.index[-1] == "mean"
    assert "mean" in capsys.readouterr().out
    table = evaluate("average", atlas_root, split="paper/test", metrics=["EN"], progress=False)
    assert np.allclose(table["EN"].to_numpy(), back["EN"].to_numpy(), rtol=1e-5)
