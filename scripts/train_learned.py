"""Train the shipped learned-fusion weights (``dilran_lite/weights/learned-fusion*.safetensors``).

For each candidate objective (a metric-weights spec of :mod:`dilran_lite.surrogates`, or
``alpha,beta`` of the hand-written fusion objective) it trains the weight net (image output by
default) on the frozen ``dilran-paper`` features of the split's training pairs (crops encoded
once), then picks the
candidate on the split's *val* pairs only: the most of the 8 metrics (EN, SD, SF, MI, SCD, VIF,
Qabf, SSIM) on which its mean beats the best of every baseline and every DILRAN rule there, ties
broken by the mean of its score divided by that best.
The chosen weights are stored in float16 with a sidecar that records this command::

    DILRAN_DATA=<folder holding harvard-mri-ct> python scripts/train_learned.py --split series
    DILRAN_DATA=<folder holding harvard-mri-ct> python scripts/train_learned.py --split paper

(the default ``--grid`` is :data:`CANDIDATES`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dilran_lite.learned import METRIC_OBJECTIVE, LearnedTrainConfig, train_learned_fusion
from dilran_lite.metrics import compute_metrics, to_uint8
from dilran_lite.pretrained import WEIGHTS_DIR
from dilran_lite.train import save_checkpoint

GOAL_METRICS = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]
CANDIDATES = [
    METRIC_OBJECTIVE,
    "VIF=1,SSIM=1,Qabf=2,SCD=1@max,SD=1@max,SF=1@laplacian,MI=1@max",
    "VIF=0.3,SSIM=2,Qabf=2,SCD=2@max,SD=1@max,SF=1@laplacian",
]
"""The candidate objectives the shipped layers were chosen from (on val)."""


def val_scores(model, val: dict) -> dict[str, float]:
    """Mean of the 8 metrics over the cached validation pairs, for the model."""
    rows = []
    with torch.no_grad():
        for i in range(len(val["a"])):
            a, b = val["a"][i : i + 1], val["b"][i : i + 1]
            f, _ = model.fuse_features(
                val["f1"][i : i + 1].float(), val["f2"][i : i + 1].float(), a, b
            )
            a8, b8 = to_uint8(a[0]), to_uint8(b[0])
            rows.append(compute_metrics(a8, b8, to_uint8(f[0].clamp(0, 1)), GOAL_METRICS))
    return {m: float(np.mean([r[m] for r in rows])) for m in GOAL_METRICS}


def load_feature_cache(path: Path) -> dict:
    """The encoded crops of an earlier call (so that a restarted run does not encode again)."""
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    parts = {
        p: {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(p + ".")}
        for p in ("train", "val")
    }
    return {
        "key": tuple(json.loads(meta["key"])),
        "source": meta["source"],
        "n": tuple(json.loads(meta["n"])),
        "encode_s": float(meta["encode_s"]),
        **parts,
    }


def save_feature_cache(path: Path, cache: dict) -> None:
    tensors = {f"{p}.{k}": v.contiguous() for p in ("train", "val") for k, v in cache[p].items()}
    meta = {
        "key": json.dumps(list(cache["key"])),
        "source": cache["source"],
        "n": json.dumps(list(cache["n"])),
        "encode_s": str(cache["encode_s"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def best_of_others(split: str, limit: int | None) -> dict[str, float]:
    """Per metric, the best mean over the split's val pairs of every baseline and every DILRAN
    rule (on the split's own backbone): what the learned layer has to beat."""
    from dilran_lite import experiments as E
    from dilran_lite.pretrained import pretrained

    name = E.BEYOND_WEIGHTS[split][0]
    pairs, _ = E.load_split_pairs(f"{split}/val", limit, "atlas")
    runs = E.beyond_runs(pairs, split, pretrained(name), None, name, "")
    E.score_runs(runs, {split: pairs}, GOAL_METRICS)
    rows = [E._means(r, GOAL_METRICS) for r in runs]
    return {m: max(r[m] for r in rows) for m in GOAL_METRICS}


def _public_args(argv: list[str]) -> list[str]:
    """The arguments without ``--runs DIR`` (a folder of this machine, not part of the recipe)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--runs"):
            skip = arg == "--runs"
            continue
        out.append(arg)
    return out


def _slug(item: str) -> str:
    """A folder name for one candidate objective (its run resumes under the same name)."""
    return hashlib.sha1(item.encode()).hexdigest()[:10]


def _candidate(item: str) -> dict:
    """``"1,1"`` -> the (alpha, beta) objective; anything else is a metric-weights spec."""
    parts = item.split(",")
    if len(parts) == 2 and all(x.replace(".", "", 1).isdigit() for x in parts):
        return {"alpha": float(parts[0]), "beta": float(parts[1]), "metric_weights": ""}
    return {"metric_weights": item}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="series", choices=["series", "paper"])
    p.add_argument(
        "--grid",
        nargs="+",
        default=CANDIDATES,
        help="candidate objectives: 'alpha,beta' of the fusion objective, or a metric-weights "
        "spec such as 'VIF=1,SSIM=1,SD=1@max' (default: CANDIDATES)",
    )
    p.add_argument("--output", default="image", choices=["features", "image"])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--crop", type=int, default=64, help="training crop size (default 64)")
    p.add_argument("--crops-per-pair", type=int, default=2)
    p.add_argument("--val-limit", type=int, default=None, help="first N val pairs (default all)")
    p.add_argument("--runs", default="/tmp/learned-runs", help="folder for the runs' checkpoints")
    p.add_argument("--name", default=None, help="shipped name (default from the split)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    name = args.name or (
        "learned-fusion" if args.split == "series" else "learned-fusion-paper-split"
    )
    # the backbone was trained on the same split's training part: no test image was seen
    backbone = "dilran-paper" if args.split == "series" else "dilran-paper-paper-split"
    base = LearnedTrainConfig(
        backbone=backbone,
        split=args.split,
        data="atlas",
        output=args.output,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        val_limit=args.val_limit,
        crop=args.crop,
        crops_per_pair=args.crops_per_pair,
    )
    tag = f"{args.split}-c{args.crop}x{args.crops_per_pair}-v{args.val_limit}"
    cache_file = Path(args.runs) / f"{tag}-features.safetensors"
    cache = load_feature_cache(cache_file)
    if not cache:  # encode once (0 epochs) and keep the features on disk
        train_learned_fusion(replace(base, epochs=0), Path(args.runs) / "encode", cache=cache)
        save_feature_cache(cache_file, cache)
    target = best_of_others(args.split, args.val_limit)
    print("best of the other methods on val:", json.dumps(target), flush=True)
    results = []
    for item in args.grid:
        cfg = replace(base, **_candidate(item))
        model, meta = train_learned_fusion(
            cfg, Path(args.runs) / f"{tag}-{args.output}-{_slug(item)}", resume=True, cache=cache
        )
        scores = val_scores(model, cache["val"])
        wins = sum(scores[m] > target[m] for m in GOAL_METRICS)
        ratio = float(np.mean([scores[m] / target[m] for m in GOAL_METRICS]))
        row = {"objective": item, "wins": wins, "ratio": ratio, "val": scores}
        print(json.dumps(row), flush=True)
        results.append((wins, ratio, item, model, meta, scores))
    wins, _, item, model, meta, scores = max(results, key=lambda r: r[:2])
    command = (
        "DILRAN_DATA=<folder holding harvard-mri-ct> python scripts/train_learned.py "
        + " ".join(_public_args(sys.argv[1:] if argv is None else argv))
    )
    meta = {
        **meta,
        "command": command.strip(),
        "selection": {
            "rule": "most of the 8 metrics above the best of every baseline and every DILRAN "
            "rule on the split's val pairs, ties by the mean of score / best",
            "candidates": [
                {"objective": r[2], "wins": r[0], "mean_ratio": r[1], "val": r[5]} for r in results
            ],
            "best_other_val": target,
            "chosen": {"objective": item, "wins": wins},
        },
        "notes": "Trained on a CPU (2 shared cores, no GPU): the frozen "
        f"{backbone} encoder's features of {args.crops_per_pair} random {args.crop}x{args.crop} "
        "crops per training pair were computed once and cached; "
        f"{args.epochs} epochs of {args.steps} Adam steps (batch 8, lr 1e-3) on the weight net "
        f"only; validation on {'all' if args.val_limit is None else args.val_limit} whole val "
        "pairs.",
    }
    save_checkpoint(WEIGHTS_DIR / f"{name}.safetensors", model, meta, dtype=torch.float16)
    print(f"wrote {WEIGHTS_DIR / name}.safetensors ({item!r}, {wins}/8 on val)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
