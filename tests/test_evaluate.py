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
from dilran_lite.evaluate import BUILTIN_METHODS, evaluate, main


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


# ------------------------------------------------------------------------------------------
# evaluate_folder / `dilran-lite evaluate --fused`
# ------------------------------------------------------------------------------------------
def _tiny_folder(root: Path, other: str = "CT", n: int = 3, size: int = 64) -> Path:
    """A dataset folder of ``n`` phantom pairs (``other`` in colour for PET/SPECT) with a
    splits.json whose series/test holds the first two."""
    from dilran_lite.inference import save_image
    from dilran_lite.phantom import PhantomDataset

    ds = PhantomDataset(n=n, size=size, seed=5, modality=other)
    names = []
    for a, b, name in ds:
        save_image(a, root / "MRI" / f"{name}.png")
        save_image(b, root / other / f"{name}.png")
        names.append(f"{name}.png")
    splits = {"series": {"train": names[2:], "val": [], "test": names[:2]}}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def test_folder_of_fused_images_matches_evaluate(tmp_path):
    from dilran_lite.evaluate import evaluate_folder
    from dilran_lite.inference import save_image
    from dilran_lite.phantom import PhantomDataset

    ds = PhantomDataset(n=3, size=64, seed=1)
    out = tmp_path / "fused"
    for a, b, name in ds:  # a user's own method: here the pixel average, saved as 8-bit PNG
        save_image(0.5 * (a + b), out / f"{name}.png")
    (out / "notes.txt").write_text("other files are ignored")
    csv = tmp_path / "sub" / "scores.csv"
    got = evaluate_folder(out, ds, csv_path=csv, progress=False)
    ref = evaluate("average", ds, progress=False)
    assert list(got.index) == list(ref.index) and list(got.columns) == list(M.METRICS)
    # the folder holds the 8-bit rounding of the average, which evaluate quantises the same way
    assert np.allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-6, equal_nan=True)
    assert pd.read_csv(csv, index_col="image").index[-1] == "mean"


def test_fuse_then_evaluate_round_trip_on_the_command_line(tmp_path, capsys):
    from dilran_lite.cli import main as cli

    data = _tiny_folder(tmp_path / "D")
    out, csv = tmp_path / "out", tmp_path / "scores.csv"
    fuse = ["fuse", "--data", str(data), "--split", "series/test", "-o", str(out)]
    assert cli([*fuse, "--weights", "dilran-lite", "--strategy", "average", "--quiet"]) == 0
    args = ["evaluate", "--fused", str(out), "--dataset", str(data), "--split", "series/test"]
    assert cli([*args, "--csv", str(csv), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(csv, index_col="image")
    assert list(table.index) == ["phantom_0005.png", "phantom_0006.png", "mean"]
    assert "mean" in printed and "wrote" in printed
    assert np.isfinite(table.loc["mean", "SSIM"]) and table.loc["mean", "EN"] > 0


def test_colour_pairs_are_scored_on_the_y_channel(tmp_path):
    from dilran_lite.color import rgb_to_luma
    from dilran_lite.data import PairedDataset, load_image
    from dilran_lite.evaluate import evaluate_folder

    data = _tiny_folder(tmp_path / "P", other="PET")
    ds = PairedDataset(data, pairs="mri-pet", split="series/test")
    out = tmp_path / "fused"
    from dilran_lite.inference import save_image

    for a, b, name in ds:
        save_image(BUILTIN_METHODS["max"](a, b), out / name)  # a colour result
    table = evaluate_folder(out, data, split="series/test", metrics=["PSNR", "EN"], progress=False)
    a, b, name = ds[0]
    fused = rgb_to_luma(load_image(out / name, "RGB"))
    expect = M.compute_metrics(a, rgb_to_luma(b), fused, ["PSNR", "EN"])
    assert table.loc[name, "PSNR"] == pytest.approx(expect["PSNR"])
    assert table.loc[name, "EN"] == pytest.approx(expect["EN"])
    # the folder is read as MRI-PET (guessed from PET/), also by evaluate with a method
    t2 = evaluate("max", str(data), split="series/test", metrics=["PSNR"], progress=False)
    assert t2.loc[name, "PSNR"] == pytest.approx(expect["PSNR"], abs=0.05)


def test_missing_and_mis_sized_images_are_named_before_any_work(tmp_path, capsys):
    from PIL import Image

    from dilran_lite.cli import main as cli
    from dilran_lite.errors import UserError
    from dilran_lite.evaluate import evaluate_folder

    data = _tiny_folder(tmp_path / "D", n=4)
    splits = json.loads((data / "splits.json").read_text())
    splits["series"]["test"] = sorted(p.name for p in (data / "MRI").iterdir())
    (data / "splits.json").write_text(json.dumps(splits))
    out = tmp_path / "out"
    out.mkdir()
    names = splits["series"]["test"]
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(out / names[0])
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(out / names[1])
    (out / names[2]).write_bytes(b"not a png")
    with pytest.raises(UserError) as err:
        evaluate_folder(out, data, split="series/test", progress=False)
    msg = str(err.value)
    assert f"1 missing: {names[3]}" in msg
    assert f"{names[1]} (32x64, sources 64x64)" in msg and f"{names[2]} (unreadable)" in msg
    args = ["evaluate", "--fused", str(out), "--dataset", str(data), "--no-progress"]
    assert cli(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(UserError, match="not found"):
        evaluate_folder(tmp_path / "nope", data, split="series/test", progress=False)


def test_csv_path_is_checked_before_the_work(tmp_path, small, monkeypatch):
    from dilran_lite import evaluate as E
    from dilran_lite.errors import UserError

    calls = []
    monkeypatch.setattr(E, "score", lambda *a: calls.append(1) or {})
    with pytest.raises(UserError, match="is a folder"):
        evaluate("average", small, csv_path=tmp_path, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create the folder"):
        evaluate("average", small, csv_path=tmp_path / "file" / "t.csv", progress=False)
    with pytest.raises(UserError, match="is a folder"):
        E.evaluate_folder(tmp_path, small, csv_path=tmp_path, progress=False)
    assert calls == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "max", "--weights", "no-such-weights"],
        ["--fused", "out", "--weights", "no-such-weights"],
        ["--fused", "out", "--method", "max"],
    ],
)
def test_conflicting_options_are_refused(extra, capsys):
    from dilran_lite.cli import main as cli

    assert cli(["evaluate", *extra]) == 2
    err = capsys.readouterr().err
    assert "give one of --method, --weights or --fused" in err and err.count("\n") == 1


def test_bad_dataset_and_pairs_are_one_line(tmp_path, capsys):
    from dilran_lite.cli import main as cli

    assert cli(["evaluate", "--dataset", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "neither a folder nor one of mri-ct" in capsys.readouterr().err
    data = _tiny_folder(tmp_path / "D")
    assert cli(["evaluate", "--dataset", str(data), "--pairs", "mri-pet", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "harvard-mri-pet" in err and "not found" in err and err.count("\n") == 1
