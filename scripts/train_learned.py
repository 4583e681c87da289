"""Train the shipped learned-fusion weights (``dilran_lite/weights/learned-fusion*.safetensors``).

For each candidate objective weighting (alpha, beta) it trains the weight net on the frozen
``dilran-paper`` features of the split's training pairs (crops encoded once), then picks the
candidate on the split's *val* pairs only: the most of the 8 metrics (EN, SD, SF, MI, SCD, VIF,
Qabf, SSIM) on which its mean beats the pixel maximum's, ties broken by the validation loss.
The chosen weights are stored in float16 with a sidecar that records this command::

    DILRAN_DATA=<folder holding harvard-mri-ct> python scripts/train_learned.py --split series
    DILRAN_DATA=<folder holding harvard-mri-ct> python scripts/train_learned.py --split paper
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dilran_lite.learned import LearnedTrainConfig, train_learned_fusion
from dilran_lite.metrics import compute_metrics, to_uint8
from dilran_lite.pretrained import WEIGHTS_DIR
from dilran_lite.train import save_checkpoint

GOAL_METRICS = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]


def val_scores(model, val: dict) -> dict[str, float]:
    """Mean of the 8 metrics over the cached validation pairs, for the model and pixel max."""
    rows, ref = [], []
    with torch.no_grad():
        for i in range(len(val["a"])):
            a, b = val["a"][i : i + 1], val["b"][i : i + 1]
            f, _ = model.fuse_features(
                val["f1"][i : i + 1].float(), val["f2"][i : i + 1].float(), a, b
            )
            a8, b8 = to_uint8(a[0]), to_uint8(b[0])
            rows.append(compute_metrics(a8, b8, to_uint8(f[0].clamp(0, 1)), GOAL_METRICS))
            ref.append(compute_metrics(a8, b8, to_uint8(torch.maximum(a, b)[0]), GOAL_METRICS))
    mean = {m: float(np.mean([r[m] for r in rows])) for m in GOAL_METRICS}
    mref = {m: float(np.mean([r[m] for r in ref])) for m in GOAL_METRICS}
    return {"model": mean, "pixel_max": mref, "wins": sum(mean[m] > mref[m] for m in GOAL_METRICS)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="series", choices=["series", "paper"])
    p.add_argument("--grid", nargs="+", default=["1,1", "2,0.5", "0.5,2"], help="alpha,beta")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--runs", default="/tmp/learned-runs", help="folder for the runs' checkpoints")
    p.add_argument("--name", default=None, help="shipped name (default from the split)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    name = args.name or (
        "learned-fusion" if args.split == "series" else "learned-fusion-paper-split"
    )
    base = LearnedTrainConfig(
        split=args.split, data="atlas", epochs=args.epochs, steps_per_epoch=args.steps
    )
    cache: dict = {}
    results = []
    for item in args.grid:
        alpha, beta = (float(x) for x in item.split(","))
        cfg = replace(base, alpha=alpha, beta=beta)
        out = Path(args.runs) / f"{args.split}-a{alpha}-b{beta}"
        model, meta = train_learned_fusion(cfg, out, resume=True, cache=cache)
        scores = val_scores(model, cache["val"])
        print(json.dumps({"alpha": alpha, "beta": beta, **scores}), flush=True)
        results.append((scores["wins"], -meta["best_val_loss"], alpha, beta, model, meta, scores))
    wins, _, alpha, beta, model, meta, scores = max(results, key=lambda r: r[:2])
    command = (
        "DILRAN_DATA=<folder holding harvard-mri-ct> python scripts/train_learned.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
    )
    meta = {
        **meta,
        "command": command.strip(),
        "selection": {
            "rule": "most of the 8 metrics above the pixel maximum on the split's val pairs, "
            "ties by validation loss",
            "candidates": [
                {
                    "alpha": r[2],
                    "beta": r[3],
                    "wins": r[0],
                    "best_val_loss": -r[1],
                    "val": r[6]["model"],
                }
                for r in results
            ],
            "pixel_max_val": scores["pixel_max"],
            "chosen": {"alpha": alpha, "beta": beta, "wins": wins},
        },
        "notes": "Trained on a CPU (2 shared cores, no GPU lent): the frozen dilran-paper "
        "encoder's features of one random 96x96 crop per training pair were computed once and "
        f"cached; {args.epochs} epochs of {args.steps} Adam steps (batch 8, lr 2e-3) on the "
        "weight net only; validation on the whole val images.",
    }
    save_checkpoint(WEIGHTS_DIR / f"{name}.safetensors", model, meta, dtype=torch.float16)
    print(f"wrote {WEIGHTS_DIR / name}.safetensors (alpha {alpha}, beta {beta}, {wins}/8 on val)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
