"""The speed benchmark: its summary arithmetic on known numbers, and a quick run end to end."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.run import main, summarise


def _fusion_row(preset: str, size: int, total: float, strategy: float, floor: float, **extra):
    enc = total - strategy - 0.01
    return {
        "preset": preset,
        "size": size,
        "batch": 1,
        "fast": {
            "encode_s": enc,
            "strategy_s": strategy,
            "decode_s": 0.01,
            "total_s": total,
            "cpu_s": 2 * total,
        },
        "conv_floor": {"wall_s": floor, "cpu_s": 2 * floor},
        "fast_over_floor": total / floor,
        **extra,
    }


def test_summary_ratios_and_targets_from_known_numbers():
    result = {
        "sfnn": {
            "speedup_fast_vs_loop": 2.5,
            "speedup_gram32_vs_loop": 4.0,
            "speedup_bound_exact_vs_loop": 4.5,
        },
        "fusion": [
            _fusion_row(
                "paper",
                256,
                total=1.0,
                strategy=0.25,
                floor=0.5,
                fast_gram32={"total_s": 0.6},
                fast_compiled={"total_s": 0.55},
            ),
            _fusion_row("paper", 512, total=6.0, strategy=2.0, floor=3.0),
            _fusion_row(
                "lite", 256, total=0.08, strategy=0.03, floor=0.04, fast_gram32={"total_s": 0.07}
            ),
            {"preset": "lite", "size": 512, "batch": 1, "skipped": "budget"},
        ],
        "cuda": None,
    }
    s = summarise(result)
    assert s["paper_256_fast_over_conv_floor"] == pytest.approx(2.0)
    assert s["paper_256_target_1.2x_met"] is False
    assert s["paper_256_gram32_over_conv_floor"] == pytest.approx(1.2)
    assert s["paper_256_compiled_over_conv_floor"] == pytest.approx(1.1)
    assert "paper_256_compiled_gram32_over_conv_floor" not in s  # not measured
    assert s["sfnn_target_20x_met"] is False
    assert s["sfnn_speedup_bound_exact_vs_loop"] == 4.5
    assert s["lite_256_pair_s"] == 0.08 and s["lite_target_0.1s_met"] is True
    assert s["lite_256_pair_s_gram32"] == 0.07
    assert s["paper_strategy_share_by_size"] == {256: 0.25, 512: pytest.approx(1 / 3)}
    # network 4 s at 512 and strategy 2 s: n^3 against n^2 meet at 512 * 4 / 2
    assert s["paper_strategy_equals_network_at_side"] == pytest.approx(1024)
    assert "not measured" in s["cuda"]


def test_quick_benchmark_writes_json_and_plot(tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "speed.json"
    try:
        result = main(["--quick", "--no-train", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads(out.read_text())
    assert out.with_suffix(".png").is_file()
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    s = saved["sfnn"]
    assert s["max_abs_weight_diff_fast_vs_loop"] < 1e-5  # the fast path equals the loop
    for key in ("batched_fast_gram64", "batched_fast_gram32", "eigvalsh_only_gram64"):
        assert s[key]["wall_s"] > 0
    rows = [r for r in saved["fusion"] if "fast" in r]
    assert {(r["size"], r["batch"]) for r in rows} == {(64, 1), (64, 4), (128, 1), (128, 4)}
    for r in rows:
        f = r["fast"]
        assert f["total_s"] >= f["encode_s"] and f["pairs_per_s"] > 0


def test_volume_benchmark_at_a_quarter_of_the_size_reports_every_stage():
    """``bench_volumes size`` at scale 0.25: a 128x128x75 CT onto a 64x64x45 MRI, every stage
    timed, the registration converged, memory reported."""
    pytest.importorskip("SimpleITK")
    from benchmarks.bench_volumes import size_benchmark

    out = size_benchmark(scale=0.25)
    assert out["ct"] == (128, 128, 75) and out["mri"] == (64, 64, 45)
    assert all(out[k] >= 0 for k in ("make_s", "register_s", "resample_s", "fuse_s"))
    assert 0 < out["iterations"] < 500 and out["peak_rss_gb"] > 0


def test_volume_tre_row_of_a_synthetic_head_is_small():
    sitk = pytest.importorskip("SimpleITK")
    import numpy as np

    from benchmarks.bench_volumes import tre_row
    from dilran_lite import registration as R

    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (20, 40, 40)), indexing="ij")
    arr = 1000.0 * ((x / 0.8) ** 2 + (y / 0.6) ** 2 + (z / 0.9) ** 2 < 1) - 1000
    arr += 600 * np.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2 + z**2) / 0.02)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing((2.0, 2.0, 4.0))
    points = R.tre_points(img, (20, 20, 10))
    row = tre_row(img, img, "CT", (0.0, 0.0, 6.0), (4.0, -2.0, 0.0), points)
    assert row["rotation_deg"] == 6.0 and row["shift_norm_mm"] == 4.5
    assert row["tre_mean"] < 1.0 and row["tre_max"] >= row["tre_mean"], row
