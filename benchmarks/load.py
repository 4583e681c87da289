"""Fusion under load (issue #14): ``DILRAN_DATA=<data root> python -m benchmarks.load``.

Measures, in one run, on the CPU:

* ``cli``: ``dilran-lite fuse --data $DILRAN_DATA --split series/test`` (41 MRI-CT pairs, the
  shipped paper-preset weights, a new process each time, so loading is included) once on "idle"
  cores and once while one busy-loop process per core (``python -c 'while True: pass'``, started
  and stopped here) keeps every core busy; ``loaded_over_idle`` is the ratio (target <= 3; a fair
  share of two cores is 2).
* ``nuclear``: the 128 nuclear norms of one 256x256 pair (paper preset) by the package's path
  (float64 Gram eigenvalues on single-threaded workers) and by a plain multi-threaded
  ``torch.linalg.svdvals`` call with 1 and 2 threads, idle and loaded.
* ``ratio``: one 256x256 ``model.fuse`` (the one fusion path) over the network's convolutions
  alone (:func:`dilran_lite.fast.conv_floor`), idle and loaded.

"Idle" is whatever the machine does besides this benchmark: the load average before each part is
recorded (``load_before``). Results go to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def busy_cores(n: int):
    """Keep ``n`` cores busy with pure-Python loops; stop exactly those processes on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(1.0)
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def time_cli(data: Path, split: str, threads: int | None) -> dict:
    """Wall seconds of one ``dilran-lite fuse --data`` run (a fresh process)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "dilran_lite.cli",
            "fuse",
            "--data",
            str(data),
            "--split",
            split,
            "-o",
            out,
            "--quiet",
            "--device",
            "cpu",
        ]
        load, t0 = _load(), time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        n = len(list(Path(out).glob("*.png")))
    if proc.returncode != 0:
        raise RuntimeError(f"fuse failed: {proc.stderr.strip()[-500:]}")
    return {"wall_s": round(wall, 2), "images": n, "load_before": load}


def time_parts(threads: int) -> dict:
    """Nuclear norms and whole fusion over convolutions, in this process (256x256, paper)."""
    import torch

    from benchmarks.run import test_pair, timeit
    from dilran_lite.fast import FastFuser, conv_floor
    from dilran_lite.fusion import softmax_nuclear_norms
    from dilran_lite.pretrained import pretrained

    torch.set_num_threads(threads)
    model = pretrained("dilran-paper").eval()
    a, b, _ = test_pair(256)
    with torch.inference_mode():
        f = model.encode(torch.cat([a, b]))
        s = torch.softmax(f.float(), 1).view(-1, 256, 256)
    res: dict = {"load_before": _load(), "threads": threads}
    res["norms_package_s"] = timeit(lambda: softmax_nuclear_norms(f), 3)["wall_s"]
    for t in (1, 2):
        torch.set_num_threads(t)
        res[f"norms_svdvals_{t}thread_s"] = timeit(lambda: torch.linalg.svdvals(s).sum(-1), 1)[
            "wall_s"
        ]
    torch.set_num_threads(threads)
    floor = conv_floor(FastFuser(model), 1, 256)
    with torch.inference_mode():
        res["fuse_s"] = timeit(lambda: model.fuse(a, b), 3)["wall_s"]
    res["conv_floor_s"] = timeit(floor, 3)["wall_s"]
    res["fuse_over_conv"] = res["fuse_s"] / res["conv_floor_s"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="series/test")
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy processes")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the CLI")
    ap.add_argument("--skip-cli", action="store_true")
    shipped = REPO / "dilran_lite" / "results" / "benchmarks"  # read by chapter 13
    ap.add_argument("--out", default=str(shipped / "load.json"))
    args = ap.parse_args(argv)
    root = os.environ.get("DILRAN_DATA")
    if not args.skip_cli and not root:
        raise SystemExit("set DILRAN_DATA to the data root holding harvard-mri-ct/")
    import torch

    cores = os.cpu_count() or 2
    result: dict = {"cores": cores, "busy_processes": args.busy, "torch": torch.__version__}
    result["idle"] = {"parts": time_parts(cores)}
    with busy_cores(args.busy):
        result["loaded"] = {"parts": time_parts(cores)}
    if not args.skip_cli:
        result["idle"]["cli"] = time_cli(Path(root), args.split, args.threads)
        with busy_cores(args.busy):
            result["loaded"]["cli"] = time_cli(Path(root), args.split, args.threads)
        result["cli_loaded_over_idle"] = round(
            result["loaded"]["cli"]["wall_s"] / result["idle"]["cli"]["wall_s"], 2
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
