"""Benchmark: every metric on the 41-pair ``series`` test split (pixel-average fusion).

Run ``python -m benchmarks.bench_metrics``. Reads the atlas from ``$DILRAN_DATA/harvard-mri-ct``
or ``../shared/data/harvard-mri-ct`` beside the checkout, prints per-metric and total times and
writes them, with machine information, to ``dilran_lite/results/benchmarks/metrics.json``.
The target (issue #3): all metrics for the 41 pairs in under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dilran_lite.evaluate import evaluate
from dilran_lite.metrics import METRICS

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "dilran_lite" / "results" / "benchmarks" / "metrics.json"  # ships


def _atlas() -> Path:
    base = Path(os.environ.get("DILRAN_DATA", REPO.parent / "shared" / "data"))
    root = base / "harvard-mri-ct"
    if not (root / "splits.json").is_file():
        raise SystemExit(f"atlas not found at {root}; set DILRAN_DATA")
    return root


def _load(root: Path, split: str = "test") -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    names = json.loads((root / "splits.json").read_text())["series"][split]
    pairs = []
    for name in names:
        ct = np.asarray(Image.open(root / "CT" / name).convert("L"), dtype=np.float32) / 255
        mr = np.asarray(Image.open(root / "MRI" / name).convert("L"), dtype=np.float32) / 255
        pairs.append((torch.from_numpy(ct)[None], torch.from_numpy(mr)[None], name))
    return pairs


def main() -> dict:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    pairs = _load(_atlas())
    per_metric = {}
    for name in METRICS:
        t0 = time.perf_counter()
        evaluate("average", pairs, metrics=[name], progress=False)
        per_metric[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = evaluate("average", pairs, progress=False)
    total = time.perf_counter() - t0
    result = {
        "benchmark": "all metrics, pixel-average fusion, series/test split",
        "pairs": len(pairs),
        "total_seconds_all_metrics": round(total, 3),
        "seconds_per_pair": round(total / len(pairs), 4),
        "per_metric_seconds": {k: round(v, 3) for k, v in per_metric.items()},
        "target_seconds": 60.0,
        "mean_values": {k: round(v, 4) for k, v in table.attrs["mean"].items()},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
