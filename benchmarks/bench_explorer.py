"""Benchmark: latencies of chapter 7's fusion explorer (the ipywidgets callback, no browser).

Run ``python -m benchmarks.bench_explorer [--weights dilran-paper]``. Uses two torch
threads, the shipped weights, and the atlas's MRI-CT test pairs when ``$DILRAN_DATA`` points at it
(else the phantom). It builds the widget and drives its controls as a reader would, timing each
step by CPU time of the process (all threads) and wall time:

* first display: from ``FusionExplorer(...)`` to the returned widget (encode one pair, its
  ``sfnn-max`` weights, one decode, metrics, four PNG panels);
* slider move: W1 to a value not seen before (one partial decode), and to one seen before;
* strategy switch: to a strategy for the first time on a pair (cold: its weights) and back to
  one already computed (warm);
* the temperature of ``sfnn-spatial`` and a pair switch (a new pair is encoded).

Writes the medians, every sample, ``os.getloadavg()`` before and after, and machine information
to ``dilran_lite/results/benchmarks/explorer.json`` (shipped, read by chapter 13). The targets:
a slider move under 0.15 s of CPU on two idle cores with the paper weights; first display
under 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from dilran_lite.data import load_pairs
from dilran_lite.explorer import FusionExplorer
from dilran_lite.pretrained import pretrained

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "dilran_lite" / "results" / "benchmarks" / "explorer.json"


class Clock:
    """CPU seconds (process, all threads) and wall seconds of a block: ``with clock: ...``."""

    def __enter__(self) -> Clock:
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall


def _timed(fn) -> dict:
    with Clock() as c:
        fn()
    return {"cpu_s": round(c.cpu, 4), "wall_s": round(c.wall, 4)}


def _summary(samples: list[dict]) -> dict:
    return {
        "cpu_s_median": round(statistics.median(s["cpu_s"] for s in samples), 4),
        "wall_s_median": round(statistics.median(s["wall_s"] for s in samples), 4),
        "cpu_s_max": round(max(s["cpu_s"] for s in samples), 4),
        "n": len(samples),
        "samples": samples,
    }


def _set(controls: dict, name: str, value) -> dict:
    return _timed(lambda: setattr(controls[name], "value", value))


def run(weights: str, moves: int) -> dict:
    ds = load_pairs("mri-ct", "series/test", n_phantom=3)
    model = pretrained(weights)
    load_before = os.getloadavg()
    box = {}
    first = _timed(lambda: box.setdefault("ex", FusionExplorer(model, ds, indices=[0, 1])))
    ex = box["ex"]
    shown = _timed(lambda: box.setdefault("w", ex.widget(0, "sfnn-max")))
    first = {k: round(first[k] + shown[k], 4) for k in first}
    c = ex.controls
    c["auto"].value = False
    grid = [round(0.05 * k, 2) for k in range(21)]
    new = [w for w in grid if w != c["w1"].value][:moves]
    slider_new = [_set(c, "w1", w) for w in new]
    slider_seen = [_set(c, "w1", w) for w in new[: max(1, moves // 2)]]
    c["auto"].value = True
    cold, warm = {}, {}
    for s in ("sfnn-max2", "sfnn-mean", "fer", "fl1n", "sfnn-spatial", "average"):
        cold[s] = _set(c, "strategy", s)
    for s in ("sfnn-max", "sfnn-max2", "fer", "sfnn-spatial"):
        warm[s] = _set(c, "strategy", s)
    temperature = [_set(c, "temperature", t) for t in (0.3, 1.0)]
    pair_cold = _set(c, "pair", 1)
    pair_warm = _set(c, "pair", 0)
    return {
        "benchmark": "chapter 7 fusion explorer: widget callbacks driven from Python",
        "weights": weights,
        "data": getattr(ds, "source", type(ds).__name__),
        "image_size": list(ex.pair(0)[0].shape[-2:]),
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "first_display": first,
        "slider_move_new_w1": _summary(slider_new),
        "slider_move_seen_w1": _summary(slider_seen),
        "strategy_switch_cold": _summary(list(cold.values())) | {"per_strategy": cold},
        "strategy_switch_warm": _summary(list(warm.values())) | {"per_strategy": warm},
        "temperature_change": _summary(temperature),
        "pair_switch_cold": pair_cold,
        "pair_switch_warm": pair_warm,
        "decodes": ex.decodes,
        "targets": {"slider_move_cpu_s": 0.15, "first_display_s": 5.0},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="dilran-paper")
    parser.add_argument("--moves", type=int, default=8, help="slider moves to time")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--note", default="", help="a line stored with the results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    result = run(args.weights, args.moves)
    if args.note:
        result["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    for key in (
        "slider_move_new_w1",
        "slider_move_seen_w1",
        "strategy_switch_cold",
        "strategy_switch_warm",
        "temperature_change",
    ):
        r = result[key]
        print(
            f"{key:22s} CPU {r['cpu_s_median']:.3f} s (max {r['cpu_s_max']:.3f}), "
            f"wall {r['wall_s_median']:.3f} s, median of {r['n']}"
        )
    for key in ("first_display", "pair_switch_cold", "pair_switch_warm"):
        print(f"{key:22s} CPU {result[key]['cpu_s']:.3f} s, wall {result[key]['wall_s']:.3f} s")
    print(f"load average before {result['loadavg_before']}, after {result['loadavg_after']}")
    return result


if __name__ == "__main__":
    main()
