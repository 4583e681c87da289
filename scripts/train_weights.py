"""Train the weights that ship in dilran_lite/weights/ (run from the repository root).

    python scripts/train_weights.py [NAME ...] [--minutes-scale 1.0] [--device cuda]
    python scripts/train_weights.py [NAME ...] --profile paper --device cuda

Each run trains on the training part of a split of the Harvard atlas MRI-CT pairs ($DILRAN_DATA
or data/), checkpoints to runs/<NAME>/ (resumable: run the command again), and exports the
checkpoint with the best validation loss to dilran_lite/weights/<NAME>.safetensors + .json.

Two profiles. ``paper``: the paper's schedule (Sec. 4.2: whole 256x256 images, Adam lr 1e-4,
100 epochs; batch 4, which the paper does not give), every run from scratch, checkpoints in
runs/paper/<NAME>/: about 1.5 minutes per paper-preset run on one H100. The shipped weights were
made this way. ``cpu`` (the default): random crops for a time budget per run, for a machine
without a GPU; the sidecar records the epochs and steps it got.
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

#: the paper's schedule (Sec. 4.2), for a GPU: whole images, no augmentation, lr 1e-4, 100 epochs
PAPER_SCHEDULE = dict(
    data="atlas",
    epochs=100,
    lr=1e-4,
    batch_size=4,
    crop=None,
    augment=False,
    steps_per_epoch=None,
    val_crop=None,
    val_limit=None,
    lambda2=0.0,
)

_SERIES_RUNS: dict[str, dict] = {
    "dilran-paper": dict(preset="paper"),
    "dilran-paper-affine": dict(preset="paper", model={"recon_activation": False}),
    "dilran-paper-mse": dict(preset="paper", lambda1=0.0),
    "dilran-lite": dict(preset="lite"),
    "dilran-lite-mse": dict(preset="lite", lambda1=0.0),
}

#: each run on the series split's training part, and as ``<name>-paper-split`` on the paper
#: split's, for that split's test pairs (the series-trained weights saw 12 of them)
PAPER_RUNS: dict[str, dict] = {
    **{name: {**f, "split": "series"} for name, f in _SERIES_RUNS.items()},
    **{f"{name}-paper-split": {**f, "split": "paper"} for name, f in _SERIES_RUNS.items()},
}

PAPER_NOTE = (
    "Trained with the paper's schedule (Sec. 4.2) on {device}: whole 256x256 images, no "
    "augmentation, Adam lr {lr}, {epochs} epochs, batch {batch} (the paper gives no batch size), "
    "bfloat16 autocast and channels_last on a GPU, from scratch. ImageNet VGG16 weights were not "
    "available offline, so the perceptual term is off (lambda2 = 0)."
)


def export(run_dir: Path, name: str) -> Path:
    model, meta = load_checkpoint(run_dir / "best.safetensors")
    meta.pop("_rng", None)
    meta.pop("optimizer_param_groups", None)
    meta["name"] = name
    dest = REPO / "dilran_lite" / "weights" / f"{name}.safetensors"
    # float16 halves the package; every weight keeps 11 significant bits (tests/test_train.py)
    return save_checkpoint(dest, model, meta, dtype=torch.float16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"runs (default: all of the profile's): {list(RUNS)}")
    ap.add_argument("--profile", choices=("cpu", "paper"), default="cpu")
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
    if args.profile == "paper":
        for name in args.names or list(PAPER_RUNS):
            train_paper_schedule(name, args.device)
        return
    for name in args.names or list(RUNS):
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
            resume="auto",  # continue the run when there is one, else start it
            device=args.device,
            progress=False,
            time_budget_s=budget,
            notes=note,
            change_lr=args.lr is not None,
            init=init,  # a shipped name: the sidecar records it, not a path of this machine
        )
        print(f"exported {export(run_dir, name)}", flush=True)


def train_paper_schedule(name: str, device: str | None) -> None:
    """One run of :data:`PAPER_RUNS` with :data:`PAPER_SCHEDULE`, resumable, then exported."""
    cfg = TrainConfig(**{**PAPER_SCHEDULE, **PAPER_RUNS[name]})
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "a CPU"
    note = PAPER_NOTE.format(device=where, lr=cfg.lr, epochs=cfg.epochs, batch=cfg.batch_size)
    run_dir = REPO / "runs" / "paper" / name
    print(f"== {name}: {cfg}\n   -> {run_dir}", flush=True)
    _, meta = train(cfg, run_dir, resume="auto", device=dev, progress=False, notes=note)
    times = meta["history"]["epoch_time_s"]
    print(f"   {len(times)} epochs, {sum(times):.1f} s in epochs", flush=True)
    print(f"exported {export(run_dir, name)}", flush=True)


if __name__ == "__main__":
    main()
