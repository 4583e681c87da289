"""Train the weights that ship in dilran_lite/weights/ (run from the repository root).

    python scripts/train_weights.py [NAME ...] [--minutes-scale 1.0] [--device cuda]

Each run trains on the training part of a split of the Harvard atlas MRI-CT pairs ($DILRAN_DATA
or data/), checkpoints to runs/<NAME>/ (resumable: run the command again), and exports the
checkpoint with the best validation loss to dilran_lite/weights/<NAME>.safetensors + .json.
On a CPU each run stops after its time budget; the sidecar records the epochs and steps it got.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dilran_lite.train import TrainConfig, load_checkpoint, save_checkpoint, train  # noqa: E402

CPU_NOTE = (
    "Trained on 2 CPU cores for a fixed time budget on random {crop}x{crop} crops (flips, "
    "90-degree turns), Adam lr {lr} (history.lr: the rate of every epoch), batch {batch}, "
    "{steps} steps per epoch: far fewer updates "
    "than the paper's 100 epochs on whole images. ImageNet VGG16 weights were not available "
    "offline, so the perceptual term is off (lambda2 = 0)."
)

COMMON = dict(
    data="atlas",
    batch_size=8,
    crop=96,
    augment=True,
    steps_per_epoch=50,
    epochs=1000,
    lr=3e-4,
    lambda2=0.0,
    val_crop=128,
    val_limit=None,
)

RUNS: dict[str, tuple[dict, float]] = {
    # name: (TrainConfig fields, CPU minutes)
    "dilran-lite": (dict(preset="lite", split="series", **COMMON), 18),
    "dilran-lite-mse": (
        dict(preset="lite", split="series", lambda1=0.0, **{k: v for k, v in COMMON.items()}),
        10,
    ),
    "dilran-lite-paper-split": (dict(preset="lite", split="paper", **COMMON), 10),
    "dilran-paper": (dict(preset="paper", split="series", **COMMON), 45),
    # the released code's reconstructor (no activations: affine), fine-tuned from dilran-paper
    "dilran-paper-affine": (
        dict(
            preset="paper",
            model={"recon_activation": False},
            split="series",
            **{**COMMON, "lr": 1e-4},
        ),
        45,
    ),
}

#: runs that start from other shipped weights (see dilran_lite.train.train's ``init``)
INIT: dict[str, str] = {"dilran-paper-affine": "dilran-paper"}


def export(run_dir: Path, name: str) -> Path:
    model, meta = load_checkpoint(run_dir / "best.safetensors")
    meta.pop("_rng", None)
    meta.pop("optimizer_param_groups", None)
    meta["name"] = name
    dest = REPO / "dilran_lite" / "weights" / f"{name}.safetensors"
    return save_checkpoint(dest, model, meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("names", nargs="*", default=list(RUNS), help=f"runs, default: {list(RUNS)}")
    ap.add_argument("--minutes-scale", type=float, default=1.0, help="scale every time budget")
    ap.add_argument("--device", default=None)
    ap.add_argument("--full", action="store_true", help="no time budget: train every epoch")
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="continue the run at this learning rate (a second phase; the history keeps each "
        "epoch's rate)",
    )
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in args.names:
        fields, minutes = RUNS[name]
        cfg = TrainConfig(**{**fields, **({"lr": args.lr} if args.lr else {})})
        note = CPU_NOTE.format(
            crop=cfg.crop, lr=cfg.lr, batch=cfg.batch_size, steps=cfg.steps_per_epoch
        )
        init = INIT.get(name)
        if init:
            info = json.loads((REPO / "dilran_lite" / "weights" / f"{init}.json").read_text())
            note += (
                f" Started from the shipped weights {init} (epoch {info.get('epoch')} of that run, "
                f"git {str(info.get('git_commit'))[:10]}), every parameter copied."
            )
        budget = None if args.full else minutes * 60 * args.minutes_scale
        run_dir = REPO / "runs" / name
        print(f"== {name}: {cfg}\n   budget {budget} s -> {run_dir}", flush=True)
        train(
            cfg,
            run_dir,
            resume=True,
            device=args.device,
            progress=False,
            time_budget_s=budget,
            notes=note,
            change_lr=args.lr is not None,
            init=init,  # a shipped name: the sidecar records it, not a path of this machine
        )
        print(f"exported {export(run_dir, name)}", flush=True)


if __name__ == "__main__":
    main()
