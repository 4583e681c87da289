"""Peak memory and time of one fusion by image size (issue #14): ``python -m benchmarks.memory``.

Each size runs in a fresh process (so that its peak resident set size is its own): one
``model.fuse`` (the shipped paper-preset weights, ``sfnn-max``, on a CPU) of a test pair
resized to size x size (the atlas's first series/test pair when ``DILRAN_DATA`` holds it, else
the built-in phantom). Recorded per size: the process's peak RSS (``ru_maxrss``, everything:
PyTorch, the model, the images), the estimate of :func:`dilran_lite.tiling.fusion_memory`, the
budget (1.5 GB at 512, 4 GB at 2048), the wall time of the whole fusion and of the SFNN weights
(the nuclear norms) inside it, and the load average before. Results go to ``--out`` (JSON) and a
plot beside it (PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_GB = {512: 1.5, 2048: 4.0}


def _norm_seconds_per_map(size: int, maps: int = 2) -> float:
    """Seconds of one float64 Gram + eigenvalue problem of a size x size softmax-like map on one
    thread (the mean of ``maps``)."""
    import torch

    from dilran_lite.fusion import matrix_norms, single_threaded

    x = torch.softmax(torch.randn(4, size, size), 0)[:maps]
    with single_threaded():
        t0 = time.perf_counter()
        matrix_norms(x, "gram64")
    return (time.perf_counter() - t0) / maps


def child(size: int, strategy: str = "sfnn-max") -> dict:
    """One fusion at ``size``; returns its measurements (run in a fresh process)."""
    import torch

    from benchmarks.run import test_pair
    from dilran_lite import fusion
    from dilran_lite.inference import fuse_images
    from dilran_lite.pretrained import pretrained
    from dilran_lite.tiling import HALO, default_tile, fusion_memory

    model = pretrained("dilran-paper")
    a, b, source = test_pair(size)
    norms = {"s": 0.0}
    plain = fusion.sfnn_weights

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return plain(*args, **kwargs)
        finally:
            norms["s"] += time.perf_counter() - t0

    fusion.sfnn_weights = timed
    tile = default_tile(model.config)
    tiled = size > tile + 2 * HALO
    load = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = fuse_images(model, a, b, strategy)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per_map = _norm_seconds_per_map(size)
    maps = 2 * model.config.width
    return {
        "size": size,
        "strategy": strategy,
        "norm_s_per_map_1thread": round(per_map, 3),
        "norms_projected_s_2workers": round(per_map * maps / 2, 1),
        "data": source,
        "tiled": tiled,
        "tile": tile if tiled else None,
        "halo": HALO,
        "peak_rss_gb": round(peak / 2**30, 3),
        "estimate_gb": round(
            fusion_memory(model.config, 1, size, size, tile if tiled else None) / 2**30, 3
        ),
        "budget_gb": BUDGET_GB.get(size),
        "fuse_s": round(wall, 2),
        "sfnn_weights_s": round(norms["s"], 2),
        "threads": torch.get_num_threads(),
        "load_before": load,
        "output_mean": round(float(out.mean()), 4),
    }


def components(size: int) -> dict:
    """Peak RSS of the parts of a tiled ``size`` fusion without its hours of compute: both
    images' stored features (random float32, touched), one encoder tile, one decoder tile and
    the first nuclear-norm task of each of two workers (the largest maps: one channel each)."""
    import torch

    from dilran_lite.fusion import log_normaliser, matrix_norms, run_tasks
    from dilran_lite.model import build_model
    from dilran_lite.tiling import HALO, default_tile

    model = build_model("paper").eval()
    tile = default_tile(model.config) + 2 * HALO
    t0 = time.perf_counter()
    with torch.inference_mode():
        f1 = torch.rand(1, model.config.width, size, size)
        f2 = torch.rand(1, model.config.width, size, size)
        model.decoder(model.encoder(torch.rand(1, 1, tile, tile)))
        lse = log_normaliser(f1)
        tasks = [
            lambda k=k: matrix_norms(f1[0, k : k + 1].double().sub_(lse[0]).exp_(), "gram64")
            for k in range(2)
        ]
        run_tasks(tasks, 2)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "size": size,
        "what": "components: features of both images + one tile + two norm tasks",
        "peak_rss_gb": round(peak / 2**30, 3),
        "budget_gb": BUDGET_GB.get(size),
        "features_gb": round(2 * f2.numel() * 4 / 2**30, 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def plot(rows: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = [r["size"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.loglog(sizes, [r["peak_rss_gb"] for r in rows], "o-", label="peak RSS")
    ax1.loglog(sizes, [r["estimate_gb"] for r in rows], "k:", label="estimate")
    for s, gb in BUDGET_GB.items():
        ax1.plot([s], [gb], "rv", label=f"budget at {s}")
    ax1.set(xlabel="image side (pixels)", ylabel="GB", title="memory of one fusion")
    ax1.legend(fontsize=7)
    ax2.loglog(sizes, [r["fuse_s"] for r in rows], "o-", label="whole fusion")
    ax2.loglog(
        sizes,
        [r["sfnn_weights_s"] or r["norms_projected_s_2workers"] for r in rows],
        "s--",
        label="SFNN nuclear norms (projected where not run)",
    )
    ax2.set(xlabel="image side (pixels)", ylabel="seconds", title="time of one fusion (CPU)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="sfnn-max")
    ap.add_argument("--components", type=int, help="measure only the parts at this size")
    shipped = REPO / "dilran_lite" / "results" / "benchmarks"  # read by chapter 13
    ap.add_argument("--out", default=str(shipped / "memory.json"))
    args = ap.parse_args(argv)
    if args.components:
        print(json.dumps(components(args.components)))
        return []
    if args.child:
        print(json.dumps(child(args.child, args.strategy)))
        return []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file():  # add to (or replace) the rows of earlier runs
        rows = [r for r in json.loads(out.read_text())["rows"] if r["size"] not in args.sizes]
    for size in args.sizes:
        cmd = [sys.executable, "-m", "benchmarks.memory", "--child", str(size)]
        cmd += ["--strategy", args.strategy]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            rows.append({"size": size, "error": proc.stderr.strip()[-300:]})
            break
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
        out.write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    rows.sort(key=lambda r: r["size"])
    out.write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    plot([r for r in rows if "error" not in r], out.with_suffix(".png"))
    return rows


if __name__ == "__main__":
    main()
