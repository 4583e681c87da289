"""The named evaluator conventions against the values of the field's own reference code.

The fixtures (../shared/fixtures/metric-conventions, see its README) hold 12 triples (4 MRI-CT
atlas pairs x 3 fused images) scored by CDDFuse's ``utils/Evaluator.py`` in its pinned
environment (scikit-image 0.19.2), by VIFB's MATLAB metrics and ``fmi.m`` in GNU Octave, and by
this package. Every metric of every convention must equal them to a relative 1e-6, except where
a comment below says why a looser bound is right.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA
from PIL import Image

from dilran_lite import conventions as C
from dilran_lite import metrics as M
from dilran_lite.cli import main as cli_main
from dilran_lite.evaluate import evaluate, evaluate_folder, sidecar_path

FIXTURES = SHARED_DATA.parent / "fixtures" / "metric-conventions"
if os.environ.get("DILRAN_NO_SHARED", "").strip() not in {"", "0"}:
    FIXTURES = Path("/nonexistent-dilran-fixtures")

RTOL = 1e-6
# CDDFuse reads the images as float32 and computes SD, SF, AG, MSE, CC, PSNR, SCD and Qabf in
# float32 (fixtures README): the reference values themselves carry float32 round-off, measured
# there at up to 1.58e-7 between two environments; here they differ by at most 1.5e-7 from the
# float64 computation, inside 1e-6.
# VIFB's Qcb divides local contrasts of frequency-filtered images, and in the black background
# of pair 41006 both contrasts are FFT round-off: swapping numpy's FFT for scipy's (same maths)
# moves Qcb there by 7e-5, and the value here differs from Octave's (FFTW) by up to 1.7e-4.
# 5e-4 is the bound that round-off allows; the other 9 triples agree to 6e-7.
LOOSER = {("vifb", "Qcb"): 5e-4}

# the fixture key of each convention's metric, where the names differ
FIXTURE_KEY = {
    "cddfuse": ("cddfuse", {"SSIM": "SSIM_skimage_0.19"}),
    "cddfuse-dr255": ("cddfuse", {"SSIM": "SSIM_data_range_255"}),
    "vifb": ("vifb", {}),
    "textbook": ("textbook", {}),
}


def _needs_fixtures() -> None:
    if not (FIXTURES / "values.json").is_file() or not SHARED_DATA.is_dir():
        pytest.skip(f"{FIXTURES} or {SHARED_DATA} not found (they live in ../shared)")


@lru_cache(maxsize=1)
def _fixtures() -> tuple[list[dict], dict]:
    triples = json.loads((FIXTURES / "triples.json").read_text())["triples"]
    values = json.loads((FIXTURES / "values.json").read_text())["values"]
    return triples, values


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


@lru_cache(maxsize=16)
def _images(triple_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = next(t for t in _fixtures()[0] if t["id"] == triple_id)
    return _read(SHARED_DATA / t["mri"]), _read(SHARED_DATA / t["ct"]), _read(FIXTURES / t["fused"])


def _triple_ids() -> list[str]:
    if not (FIXTURES / "triples.json").is_file():
        return ["absent"]
    return [t["id"] for t in _fixtures()[0]]


def _rel(got: float, ref: float) -> float:
    return abs(got - ref) / abs(ref) if ref != 0 else abs(got)


@pytest.mark.parametrize("convention", ["cddfuse", "cddfuse-dr255", "vifb"])
@pytest.mark.parametrize("triple_id", _triple_ids())
def test_convention_equals_reference_code(convention, triple_id):
    _needs_fixtures()
    key, rename = FIXTURE_KEY[convention]
    ref = _fixtures()[1][key][triple_id]
    got = C.score(convention, *_images(triple_id))
    assert list(got) == C.CONVENTIONS[convention].names
    for name, value in got.items():
        tol = LOOSER.get((convention, name), RTOL)
        assert _rel(value, ref[rename.get(name, name)]) <= tol, (convention, triple_id, name)


def test_textbook_convention_is_the_package_and_its_fixture():
    _needs_fixtures()
    triple_id = "34010__max"
    mri, ct, f = _images(triple_id)
    got = C.score("textbook", mri, ct, f)
    assert got == M.compute_metrics(mri, ct, f)
    for name, value in got.items():
        assert _rel(value, _fixtures()[1]["textbook"][triple_id][name]) <= RTOL, name


@pytest.mark.parametrize("triple_id", _triple_ids())
def test_fmi_m_equals_fmi_m_on_the_crops(triple_id):
    _needs_fixtures()
    mri, ct, f = _images(triple_id)
    values = _fixtures()[1]
    crops = zip(values["fmi_m"][triple_id], values["textbook_fmi_on_fmi_m_crops"][triple_id])
    for crop, clean in crops:
        r, c, s = crop["crop_r0"], crop["crop_c0"], crop["crop_size"]
        win = (slice(r, r + s), slice(c, c + s))
        got = C.score("fmi-m", mri[win], ct[win], f[win])
        assert _rel(got["FMI_pixel"], crop["none"]) <= RTOL, (r, c)
        assert _rel(got["FMI_gradient"], crop["gradient"]) <= RTOL, (r, c)
        for feature in ("pixel", "gradient"):  # the package's clean FMI is unchanged
            assert M.fmi(mri[win], ct[win], f[win], feature=feature) == pytest.approx(
                clean[f"FMI_{feature}"], rel=RTOL
            )


def test_fmi_m_quirks_on_small_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (12, 12)).astype(np.uint8)
    b = rng.integers(0, 256, (12, 12)).astype(np.uint8)
    # quirk 1: two flat windows of different values score 1 in fmi.m, 0 in the clean FMI
    flat_a, flat_f = np.full((3, 3), 10, np.uint8), np.full((3, 3), 40, np.uint8)
    assert M.fmi(flat_a, flat_a, flat_f, fmi_m=True) == pytest.approx(1.0, abs=1e-12)
    assert M.fmi(flat_a, flat_a, flat_f) == pytest.approx(0.0, abs=1e-12)
    # quirk 2: F copies B's lone pixel, not A's window: fmi.m scores FMI_BF 0, the clean FMI 1
    zero = np.zeros((3, 3), np.uint8)
    lone = zero.copy()
    lone[1, 1] = 200
    assert M.fmi(zero, lone, lone) == pytest.approx(0.5)  # (0 + 1) / 2
    assert M.fmi(zero, lone, lone, fmi_m=True) == pytest.approx(0.0, abs=1e-12)
    # the order of the sources matters only in fmi.m
    assert M.fmi(lone, zero, lone, fmi_m=True) == pytest.approx(0.5)
    assert M.fmi(a, b, a) == pytest.approx(M.fmi(b, a, a))


def _dataset(tmp_path: Path, kind: str) -> tuple[Path, Path, list[str]]:
    """A dataset folder with the fixtures' 4 pairs as series/test, and the fused folder of one
    kind (NAME.png per pair)."""
    triples = [t for t in _fixtures()[0] if t["kind"] == kind]
    data, fused = tmp_path / "ds", tmp_path / "fused"
    for sub in ("MRI", "CT"):
        (data / sub).mkdir(parents=True)
    fused.mkdir()
    names = []
    for t in triples:
        name = f"{t['pair']}.png"
        names.append(name)
        shutil.copy(SHARED_DATA / t["mri"], data / "MRI" / name)
        shutil.copy(SHARED_DATA / t["ct"], data / "CT" / name)
        shutil.copy(FIXTURES / t["fused"], fused / name)
    splits = {"series": {"train": [], "test": names}}
    (data / "splits.json").write_text(json.dumps(splits))
    return data, fused, names


def test_cli_evaluate_convention_cddfuse_reproduces_the_fixtures(tmp_path, capsys):
    _needs_fixtures()
    data, fused, names = _dataset(tmp_path, "max")
    csv = tmp_path / "out" / "cdd.csv"
    args = ["evaluate", "--fused", str(fused), "--dataset", str(data), "--pairs", "mri-ct"]
    args += ["--split", "series/test", "--convention", "cddfuse", "--csv", str(csv)]
    assert cli_main(args + ["--no-progress"]) == 0
    table = pd.read_csv(csv, index_col=0)
    cols = ["EN", "SD", "SF", "AG", "MI", "MSE", "CC", "PSNR", "SCD", "VIFF", "Qabf", "SSIM"]
    assert list(table.columns) == cols
    assert list(table.index) == names + ["mean"]
    ref = _fixtures()[1]["cddfuse"]
    for name in names:
        row = ref[f"{Path(name).stem}__max"]
        for col in cols:
            want = row["SSIM_skimage_0.19" if col == "SSIM" else col]
            assert table.loc[name, col] == pytest.approx(want, rel=1e-5)  # the CSV's 6 digits
    side = json.loads(sidecar_path(csv).read_text())
    assert side["convention"] == "cddfuse"
    assert [m["metric"] for m in side["metrics"]] == cols
    assert {m["metric"]: m["unit"] for m in side["metrics"]}["MI"] == "nats"
    # the function the CLI calls, at full precision
    full = evaluate_folder(
        fused, data, "series/test", "mri-ct", progress=False, convention="cddfuse"
    )
    assert full.attrs["convention"] == "cddfuse"
    for name in names:
        row = ref[f"{Path(name).stem}__max"]
        assert full.loc[name, "VIFF"] == pytest.approx(row["VIFF"], rel=RTOL)
        assert full.loc[name, "SSIM"] == pytest.approx(row["SSIM_skimage_0.19"], rel=RTOL)


def test_vifb_header_and_unknown_convention(tmp_path, capsys):
    _needs_fixtures()
    data, fused, _ = _dataset(tmp_path, "average")
    table = evaluate_folder(
        fused, data, "series/test", "mri-ct", metrics=None, progress=False, convention="vifb"
    )
    assert list(table.columns) == C.CONVENTIONS["vifb"].names
    assert C.CONVENTIONS["vifb"].names == [
        "Cross_entropy", "Entropy", "Mutinf", "Psnr", "Avg_gradient", "Qabf", "Variance",
        "Spatial_frequency", "Rmse", "Ssim", "Qcb", "Qcv", "Edge_intensity",
    ]  # fmt: skip
    args = ["evaluate", "--fused", str(fused), "--dataset", str(data), "--no-progress"]
    with pytest.raises(SystemExit) as err:  # argparse refuses an unknown choice
        cli_main(args + ["--convention", "nope"])
    assert err.value.code == 2
    assert cli_main(args + ["--convention", "vifb", "--metrics", "PSNR"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_default_convention_is_recorded_and_unchanged(tmp_path):
    rng = np.random.default_rng(1)
    small = [(rng.random((1, 48, 48)).astype(np.float32),) * 2 + ("p0",)]
    small = [(a, np.flipud(a[0]).copy()[None], n) for a, _, n in small]
    csv = tmp_path / "t.csv"
    import torch

    data = [(torch.from_numpy(a), torch.from_numpy(b), n) for a, b, n in small]
    table = evaluate("average", data, metrics=["EN", "SD"], csv_path=csv, progress=False)
    assert table.attrs["convention"] == "textbook"
    assert json.loads(sidecar_path(csv).read_text())["convention"] == "textbook"
    a, b = data[0][0], data[0][1]
    assert table.loc["p0", "EN"] == M.entropy((a + b) / 2)
    with pytest.raises(Exception, match="unknown convention"):
        evaluate("average", data, convention="nope", progress=False)


def test_cddfuse_stretches_a_methods_output_only():
    import torch

    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.random((1, 48, 48)).astype(np.float32))
    b = torch.from_numpy(rng.random((1, 48, 48)).astype(np.float32))
    dark = evaluate(lambda x, y: 0.2 + 0.5 * x, [(a, b, "p")], progress=False, convention="cddfuse")
    full = C.score("cddfuse", a, b, C.stretch(0.2 + 0.5 * a))
    assert dark.loc["p", "SD"] == pytest.approx(full["SD"])


def test_conventions_differ_as_documented():
    rng = np.random.default_rng(3)
    mri = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    ct = rng.integers(0, 200, (64, 64)).astype(np.uint8)
    f = ((mri.astype(np.float64) + ct) / 2).round().astype(np.uint8)
    cdd, vifb, tb = (C.score(n, mri, ct, f) for n in ("cddfuse", "vifb", "textbook"))
    assert cdd["MI"] == pytest.approx(tb["MI"] * math.log(2))  # nats vs bits
    assert cdd["AG"] == pytest.approx(tb["AG"] * 63 * 63 / 64**2)  # M*N vs (M-1)(N-1)
    assert vifb["Avg_gradient"] == pytest.approx(tb["AG"])
    assert vifb["Ssim"] == pytest.approx(2 * tb["SSIM"])  # a sum vs a mean
    mse = cdd["MSE"]
    assert cdd["PSNR"] == pytest.approx(10 * math.log10(float(f.max()) ** 2 / mse))
    rmse_a = math.sqrt(np.mean((mri.astype(float) - f) ** 2))
    rmse_b = math.sqrt(np.mean((ct.astype(float) - f) ** 2))
    assert vifb["Rmse"] == pytest.approx((rmse_a + rmse_b) / 2 / 64)  # RMSE / sqrt(MN)
    assert vifb["Spatial_frequency"] < tb["SF"]
    assert [r["metric"] for r in C.describe("cddfuse")] == C.CONVENTIONS["cddfuse"].names
    for conv in C.CONVENTIONS.values():
        assert conv.reading and conv.source and conv.stretch
        assert all(s.unit and s.pair for s in conv.metrics.values())
