"""Tests of dilran_lite.experiments: the quick mode end to end (4 atlas pairs), the tables'
shapes, agreement with dilran_lite.evaluate, a best-variant choice made on validation pairs, one
table computed alone equal to the pipeline's, and ``python -m dilran_lite.experiments``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dilran_lite import experiments as E
from dilran_lite.data import PairedDataset
from dilran_lite.evaluate import evaluate
from dilran_lite.metrics import to_uint8
from dilran_lite.model import build_model

ROOT = Path(__file__).resolve().parents[1]
QuickRun = tuple[Path, dict, list]
BASE_COLS = ["table", "split", "source", "method", "weights", "strategy", "pairs", "n_pairs"]


@pytest.fixture(scope="module")
def quick_run(atlas_root: Path, tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """The quick mode on 4 atlas pairs per split part, with the selection calls recorded."""
    out = tmp_path_factory.mktemp("results")
    calls: list[dict] = []
    original = E.plan.select_best_variant  # the name fuse_split calls

    def spy(candidates, split, *args, **kwargs):
        calls.append({"split": split, "candidates": list(candidates)})
        return original(candidates, split, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setenv("DILRAN_DATA", str(atlas_root.parent))
    mp.setattr(E.plan, "select_best_variant", spy)
    try:
        summary = E.run_experiments(out, splits=("series", "paper"), quick=True, data="atlas")
    finally:
        mp.undo()
    return out, summary, calls


def test_quick_mode_writes_every_file(quick_run: QuickRun) -> None:
    out, summary, _ = quick_run
    for split in ("series", "paper"):
        for stem in ("table1", "table2", "table3", "gap", "selection", "w2", "per_image"):
            assert (out / f"{stem}_{split}.csv").is_file(), stem
        png = out / f"fusion_grid_{split}.png"
        assert png.is_file() and png.stat().st_size < 1_000_000
    assert (out / "reference_paper_tables.csv").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["quick"] is True
    for key in ("command", "machine", "weights", "metrics", "perceptual", "published_reference"):
        assert key in saved
    assert "dilran-lite" in saved["weights"] and "notes" in saved["weights"]["dilran-lite"]
    assert summary["splits"]["series"]["test_pairs"] == saved["splits"]["series"]["test_pairs"]
    assert len(saved["splits"]["series"]["test_pairs"]) == 4


def test_table_shapes_and_columns(quick_run: QuickRun) -> None:
    out, _, _ = quick_run
    for split in ("series", "paper"):
        t1 = pd.read_csv(out / f"table1_{split}.csv")
        assert list(t1.columns[: len(BASE_COLS)]) == BASE_COLS
        assert {"W2_CT", "note", *E.QUICK_METRICS} <= set(t1.columns)
        assert list(t1["strategy"]) == E.STRATEGY_ORDER * (len(t1) // len(E.STRATEGY_ORDER))
        assert (t1["n_pairs"] == 4).all()
        # phi = mean and phi = sum give the same weights, hence the same row
        mean_row = t1[t1["strategy"] == "sfnn-mean"].iloc[0]
        sum_row = t1[t1["strategy"] == "sfnn-sum"].iloc[0]
        assert mean_row["PSNR"] == pytest.approx(sum_row["PSNR"])
        assert 0 < mean_row["W2_CT"] < 1

        t2 = pd.read_csv(out / f"table2_{split}.csv")
        measured = t2[t2["source"] == "measured"]
        methods = list(measured["method"])
        assert methods[:3] == [
            "pixel average",
            "pixel maximum",
            "Laplacian pyramid (4 levels, max-abs details)",
        ]
        assert any(m.startswith("best variant") for m in methods)
        quoted = t2[t2["source"].str.startswith("quoted")]
        assert len(quoted) >= 2 and quoted["PSNR"].notna().all()

        t3 = pd.read_csv(out / f"table3_{split}.csv")
        assert "MSE + gradient + perceptual" in set(t3["method"])
        assert (t3.loc[t3["source"] == "not run", "note"].str.contains("VGG16")).all()


def test_average_row_matches_evaluate(quick_run: QuickRun, atlas_root: Path) -> None:
    out, summary, _ = quick_run
    names = summary["splits"]["series"]["test_pairs"]
    ds = PairedDataset(root=atlas_root, names=names)
    ref = evaluate("average", ds, metrics=["PSNR", "SSIM", "MI"], progress=False)
    t2 = pd.read_csv(out / "table2_series.csv")
    row = t2[t2["method"] == "pixel average"].iloc[0]
    for m in ("PSNR", "SSIM", "MI"):
        assert row[m] == pytest.approx(ref.attrs["mean"][m], rel=1e-5)


def test_selection_uses_validation_pairs(quick_run: QuickRun) -> None:
    out, summary, calls = quick_run
    assert [c["split"] for c in calls] == ["series/val", "paper/val"]
    for split in ("series", "paper"):
        sel = summary["splits"][split]["selection"]
        assert sel["val_split"] == f"{split}/val"
        table = pd.read_csv(out / f"selection_{split}.csv")
        assert (table["split"] == f"{split}/val").all()
        assert table["selected"].sum() == 1
        chosen = table[table["selected"]].iloc[0]
        assert (chosen["weights"], chosen["strategy"]) == (sel["weights"], sel["strategy"])
        assert chosen["mean_rank"] == table["mean_rank"].min()


def test_select_refuses_a_test_split() -> None:
    with pytest.raises(ValueError, match="validation"):
        E.select_best_variant([("m", "sfnn-max")], "series/test", {})


def test_rank_select_picks_the_lowest_mean_rank() -> None:
    val = pd.DataFrame({"PSNR": [10.0, 12.0, 11.0], "SSIM": [0.5, 0.6, 0.7]})
    ranked = E.rank_select(val, ["PSNR", "SSIM"])
    assert list(ranked["mean_rank"]) == [3.0, 1.5, 1.5]
    assert list(ranked["selected"]) == [False, True, False]  # a tie goes to the earlier row


def test_shared_nuclear_norms_match_model_fuse() -> None:
    torch.manual_seed(0)
    model = build_model("lite", width=8, recon_widths=(8, 8)).eval()
    g = torch.Generator().manual_seed(1)
    pairs = [(torch.rand(1, 24, 24, generator=g), torch.rand(1, 24, 24, generator=g), "p0")]
    strategies = ["sfnn-max", "sfnn-mean2", "fer", "sfnn-spatial"]
    runs = E.fuse_with_model(model, pairs, strategies, "tiny", "x/test")
    a, b, _ = pairs[0]
    with torch.inference_mode():
        for s in strategies:
            ref, (_, w2) = model.fuse(a, b, s, return_weights=True)
            assert np.array_equal(runs[s].fused["p0"], to_uint8(ref[0])), s
            assert runs[s].w2["p0"] == pytest.approx(float(w2.float().mean()), abs=1e-6)


def test_untrained_models_on_the_phantom(tmp_path: Path) -> None:
    """No shipped weights needed: tiny untrained models passed in, phantom pairs, one split."""
    torch.manual_seed(0)
    models = {
        name: build_model("lite", width=8, recon_widths=(8, 8)).eval()
        for name in ("dilran-lite", "dilran-lite-mse")
    }
    summary = E.run_experiments(
        tmp_path,
        splits=("series",),
        quick=True,
        data="phantom",
        n_pairs=2,
        metrics=["PSNR", "SSIM", "MI"],
        models=models,
        figure=False,
    )
    t3 = pd.read_csv(tmp_path / "table3_series.csv")
    assert {"MSE only", "MSE + gradient (lambda1 = 0.2)"} <= set(t3["method"])
    assert summary["weights"]["dilran-lite"]["temporary"] is True
    assert summary["splits"]["series"]["selection"]["val_split"] == "series/val"
    assert not (tmp_path / "fusion_grid_series.png").exists()


def _affine_lite() -> torch.nn.Module:
    """A lite model with an affine reconstructor whose output stays inside (0, 1)."""
    torch.manual_seed(0)
    model = build_model("lite", recon_activation=False).eval()
    last = model.decoder.body[-1]
    with torch.no_grad():
        last.weight.mul_(1e-2)
        last.bias.fill_(0.5)
    return model


def test_reconstruction_gap_affine_decoder_equals_average_of_reconstructions() -> None:
    g = torch.Generator().manual_seed(1)
    pairs = [
        (torch.rand(1, 32, 32, generator=g), torch.rand(1, 32, 32, generator=g), f"{i}.png")
        for i in range(2)
    ]
    runs, ae = E.reconstruction_gap(_affine_lite(), pairs, "sfnn-max", "toy", "t/test")
    assert set(runs) == {"network", "autoencoded", "pixels"}
    for a, b, name in pairs:
        w2 = runs["pixels"].w2[name]
        assert 0 < w2 < 1
        # decode is affine and W1 + W2 = 1: decoding the mix = mixing the decodings
        net = runs["network"].fused[name].astype(int)
        rec = runs["autoencoded"].fused[name].astype(int)
        assert np.abs(net - rec).max() <= 1
        np.testing.assert_array_equal(runs["pixels"].fused[name], to_uint8((1 - w2) * a + w2 * b))
    assert list(ae.columns) == ["pair", "W2_CT", "AE_PSNR_MRI", "AE_PSNR_CT"]
    assert (ae["AE_PSNR_MRI"] < 20).all()  # this untrained model reconstructs nothing


def test_reconstruction_gap_needs_one_weight_per_pair() -> None:
    pairs = [(torch.rand(1, 16, 16), torch.rand(1, 16, 16), "0.png")]
    with pytest.raises(ValueError, match="single weight per pair"):
        E.reconstruction_gap(_affine_lite(), pairs, "sfnn-spatial", "toy", "t/test")


def _tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        name: build_model("lite", width=8, recon_widths=(8, 8)).eval()
        for name in ("dilran-lite", "dilran-lite-mse")
    }


def test_one_table_alone_equals_the_pipelines(tmp_path: Path) -> None:
    """fuse_split + table1 (the chapter's one-table path) give the pipeline's CSV row for row."""
    kwargs = dict(quick=True, data="phantom", metrics=["PSNR", "SSIM", "MI"])
    E.run_experiments(
        tmp_path, splits=("series",), n_pairs=2, models=_tiny_models(), figure=False, **kwargs
    )
    sr = E.fuse_split("series", _tiny_models(), n=2, **kwargs)
    assert sr.names == ["phantom_20000", "phantom_20001"]
    for name, fn in [
        ("table1", E.table1),
        ("table2", E.table2),
        ("table3", E.table3),
        ("gap", E.gap_table),
        ("w2", E.w2_table),
    ]:
        fmt = "%.5g" if name == "w2" else "%.6g"
        alone = pd.read_csv(io.StringIO(fn(sr).to_csv(index=False, float_format=fmt)))
        piped = pd.read_csv(tmp_path / f"{name}_series.csv")
        # the same rows and values; the last printed digit may differ (float sums in another order)
        pd.testing.assert_frame_equal(alone, piped, check_exact=False, rtol=1e-4, obj=name)
    t1 = E.table1(sr, ["PSNR"])
    assert "SSIM" not in t1.columns and len(t1) == len(E.STRATEGY_ORDER)
    per_image = E.per_image_table(sr)
    assert len(per_image) == 2 * len(sr.runs) and per_image.index.name == "image"
    assert set(E.per_image_table(sr, ["MI"]).columns) == {"MI", "method", "weights", "strategy"}


def test_python_dash_m(tmp_path: Path) -> None:
    """The command line: quick mode on two phantom pairs, exit 0, every file, no warning."""
    out = tmp_path / "r"
    flags = "--quick --data phantom --pairs 2 --splits series --metrics PSNR MI --no-cache"
    args = [*flags.split(), "--no-figure", "--out", str(out)]
    cmd = [sys.executable, "-W", "error::RuntimeWarning", "-m", "dilran_lite.experiments", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"].endswith("dilran_lite.experiments " + " ".join(args))
    assert summary["metrics"]["names"] == ["PSNR", "MI"]
    files = summary["splits"]["series"]["files"]
    assert files == sorted(
        f"{t}_series.csv"
        for t in ("table1", "table2", "table3", "gap", "selection", "w2", "per_image")
    )
    assert pd.read_csv(out / "table1_series.csv")["n_pairs"].eq(2).all()
