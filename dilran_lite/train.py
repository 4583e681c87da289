"""Training (Sec. 4.2) and checkpoints.

The fusion module is removed: the feature extractor and reconstructor are trained as an
autoencoder on single images of both modalities, with Adam (lr 1e-4), 100 epochs and the loss of
Eq. 9 (lambda1 = lambda2 = 0.2, VGG16 third block). Images of the split's ``train`` part are
trained on, its ``val`` part gives a validation loss per epoch.

:func:`train` runs named steps, d2l-style: :func:`open_run` (checks, resume), :func:`build_run`
(model, optimiser, mixed precision, loss), :func:`training_data`, then per epoch
:func:`fit_epoch` (shuffled batches through :func:`train_step`), :func:`evaluate_loss` on the
validation images and :func:`dilran_lite.checkpoint.save_epoch`. Checkpoints
(:mod:`dilran_lite.checkpoint`) are safetensors files (no pickle is ever loaded), written
atomically after every epoch, so an interruption (even ``kill -9``) loses at most the epoch in
progress; ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from ._io import TMP_TAG, git_commit
from .augment import augment_pair
from .checkpoint import (
    FORMAT,
    RUN_FILES,
    check_loss,
    check_model_config,
    is_int,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    save_epoch,
)
from .data import SingleImageDataset, load_pairs
from .errors import CheckpointError, UserError
from .losses import FusionLoss
from .model import DILRAN, PRESETS, ModelConfig
from .phantom import PhantomDataset
from .utils import amp_dtype, autocast, resolve_device, seed_everything
from .weights import available, weights_path

__all__ = [
    "TrainConfig",
    "quick_config",
    "train",
    "train_step",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "CheckpointError",
    "check_model_config",
    "RUN_FILES",
    "FORMAT",
    "fit_epoch",
    "evaluate_loss",
    "open_run",
    "build_run",
    "training_data",
    "init_weights",
    "resolve_device",
    "MAX_BATCH",
]

#: Fields that a resumed run may change (more epochs; ``data_root``: the atlas moved).
RESUME_FREE = ("epochs", "data_root")
#: Largest batch a run may ask for (the paper trains with 4; more than this is a typo or a
#: damaged checkpoint, and would allocate far past any machine's memory before failing).
MAX_BATCH = 1024
#: (lowest, highest) of every size field of :class:`TrainConfig`, checked before any allocation
_SIZES = {
    "epochs": (1, 100_000),
    "batch_size": (1, MAX_BATCH),
    "phantom_pairs": (1, 10_000),
    "phantom_size": (16, 4096),
    "seed": (0, 2**31 - 1),
    "crop": (16, 4096),
    "steps_per_epoch": (1, 1_000_000),
    "val_crop": (16, 4096),
    "val_limit": (1, 1_000_000),
}
_OPTIONAL = ("crop", "steps_per_epoch", "val_crop", "val_limit")
#: what the history of a run records per epoch
_HISTORY = ("train_loss", "val_loss", "epoch_time_s", "steps", "lr")


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in every checkpoint).

    ``split`` is ``"series"`` (whole scan series held out) or ``"paper"`` (20 random test
    pairs); training reads its ``train`` part and validates on ``val``. ``crop`` trains on
    random crops (with flips and 90-degree rotations when ``augment``); None trains on whole
    images, as the paper does. ``steps_per_epoch`` caps an epoch (quick mode). ``data`` is
    ``"atlas"`` or ``"phantom"`` (``phantom_pairs`` of ``phantom_size`` pixels; a third as many
    for validation); ``"auto"`` takes the atlas when it is found.
    """

    preset: str = "paper"
    model: dict = field(default_factory=dict)
    pairs: str = "mri-ct"
    split: str = "series"
    data: str = "auto"
    data_root: str | None = None
    phantom_pairs: int = 24
    phantom_size: int = 256
    epochs: int = 100
    lr: float = 1e-4
    batch_size: int = 4
    crop: int | None = None
    augment: bool = False
    steps_per_epoch: int | None = None
    val_crop: int | None = None
    val_limit: int | None = None
    lambda1: float = 0.2
    lambda2: float = 0.2
    gradient: str = "sobel"
    vgg_weights: str | None = None
    vgg_layer: str = "relu3_3"
    seed: int = 0
    amp: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def model_config(self) -> ModelConfig:
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if not isinstance(self.model, dict):
            raise UserError(f"model must be a dict of ModelConfig fields, got {self.model!r:.60}")
        return check_model_config(
            {**PRESETS[self.preset].to_dict(), **self.model}, "training config"
        )

    def validate(self) -> None:
        """Raise :class:`UserError` (one line naming the field, the value and what is allowed)
        for any value a run cannot use; called on construction, before any work."""
        bad = [f"{name} {getattr(self, name)!r}: {rule}" for name, rule in self._problems()]
        if bad:
            raise UserError(f"bad training option(s): {'; '.join(bad)}")
        self.model_config()

    def _problems(self) -> list[tuple[str, str]]:
        choices = {
            "pairs": ("mri-ct", "mri-pet", "mri-spect"),
            "split": ("series", "paper"),
            "data": ("auto", "atlas", "phantom"),
            "gradient": ("sobel", "diff"),
        }
        out = [
            (k, f"choose one of {list(v)}") for k, v in choices.items() if getattr(self, k) not in v
        ]
        ints = {k: v for k, v in _SIZES.items() if k not in _OPTIONAL}
        out += [
            (k, f"must be an integer from {low} to {high}")
            for k, (low, high) in ints.items()
            if not is_int(getattr(self, k), low, high)
        ]
        out += [
            (k, f"must be None or an integer from {low} to {high}")
            for k, (low, high) in _SIZES.items()
            if k in _OPTIONAL and getattr(self, k) is not None
            and not is_int(getattr(self, k), low, high)
        ]
        for k in ("lr", "lambda1", "lambda2"):
            v = getattr(self, k)
            positive = k == "lr"
            if (
                not isinstance(v, (int, float))
                or isinstance(v, bool)
                or not math.isfinite(v)
                or (v <= 0 if positive else v < 0)
            ):
                out.append((k, "must be a finite number " + ("> 0" if positive else ">= 0")))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def quick_config(**overrides) -> TrainConfig:
    """A run of a few hundred steps on 64x64 crops of the lite preset: about a minute on a CPU.

    The perceptual term is off (``lambda2 = 0``) so that no VGG16 weights are needed.
    """
    base = dict(
        preset="lite",
        epochs=4,
        steps_per_epoch=50,
        batch_size=8,
        crop=64,
        augment=True,
        val_crop=128,
        val_limit=16,
        lr=1e-3,
        lambda2=0.0,
    )
    base.update(overrides)
    return TrainConfig(**base)


def _images(cfg: TrainConfig, part: str) -> tuple[torch.Tensor, str]:
    """All single images (both modalities) of one split part as one (N, 1, H, W) tensor."""

    if cfg.data == "phantom":
        offset = {"train": 0, "val": 10_000, "test": 20_000}[part]
        n = cfg.phantom_pairs if part == "train" else max(1, cfg.phantom_pairs // 3)
        paired = PhantomDataset(n=n, size=cfg.phantom_size, seed=cfg.seed + offset)
    else:
        fallback = "phantom" if cfg.data == "auto" else None
        paired = load_pairs(cfg.pairs, f"{cfg.split}/{part}", cfg.data_root, fallback=fallback)
    singles = SingleImageDataset(paired)
    imgs = [singles[i] for i in range(len(singles))]
    sizes = {tuple(x.shape) for x in imgs}
    if len(sizes) > 1:
        raise ValueError(f"training images differ in size {sorted(sizes)}: set a crop")
    return torch.stack(imgs), singles.source


def _random_views(x: torch.Tensor, crop: int | None, augment: bool, g: torch.Generator):
    """Per image: a random ``crop`` window, plus flips and a 90-degree turn when ``augment``."""

    if augment:
        return torch.stack([augment_pair(img, img, g, crop=crop)[0] for img in x])
    if crop is None:
        return x
    h, w = x.shape[-2:]
    tops = torch.randint(0, h - crop + 1, (len(x),), generator=g).tolist()
    lefts = torch.randint(0, w - crop + 1, (len(x),), generator=g).tolist()
    return torch.stack([img[:, t : t + crop, s : s + crop] for img, t, s in zip(x, tops, lefts)])


def _centre(x: torch.Tensor, crop: int | None) -> torch.Tensor:
    if crop is None or crop >= min(x.shape[-2:]):
        return x
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def _perceptual_note(cfg: TrainConfig) -> str:
    if cfg.lambda2 == 0:
        return "off (lambda2 = 0): ImageNet VGG16 weights not used"
    src = cfg.vgg_weights or "torchvision ImageNet VGG16 (IMAGENET1K_V1)"
    return f"VGG16 {cfg.vgg_layer} from {src}, ImageNet-normalised, lambda2 = {cfg.lambda2}"


def _resume_config(cfg: TrainConfig | None, meta: dict, last: Path, change_lr: bool) -> TrainConfig:
    """The checkpoint's training config, or ``cfg`` when it differs only where a resumed run
    may differ; a conflict raises naming ``field: checkpoint value -> given value``."""
    raw = meta.get("train_config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"cannot resume {last}: it holds no training config")
    try:
        saved = TrainConfig.from_dict(raw)
    except UserError as err:
        raise CheckpointError(
            f"cannot resume {last}: its training config is invalid: {err}"
        ) from err
    if cfg is None:
        return saved
    free = set(RESUME_FREE) | ({"lr"} if change_lr else set())
    a, b = asdict(saved), asdict(cfg)
    a["model"], b["model"] = saved.model_config().to_dict(), cfg.model_config().to_dict()
    conflicts = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in free and a[k] != b[k]]
    if conflicts:
        raise CheckpointError(
            f"cannot resume {last} with another configuration ({'; '.join(conflicts)}); a "
            f"resumed run may change only {', '.join(sorted(free))}: start a new run in another "
            "folder (init= can start it from these weights)"
        )
    return cfg


def _check_out_dir(out: Path, resume: bool | str, overwrite: bool) -> bool:
    """Whether the run in ``out`` is resumed; refuses to write over a run (or into a file)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} is a file: choose a folder for the checkpoints")
    last = out / "last.safetensors"
    if resume and last.is_file():
        return True
    if resume is True:
        raise CheckpointError(
            f"cannot resume: {last} not found; check the folder (--out), or start a new run "
            "without --resume"
        )
    found = [n for n in RUN_FILES if (out / n).is_file()]
    if found and not overwrite:
        raise UserError(
            f"{out} already holds a training run ({', '.join(found)}): continue it with --resume "
            "(resume=True), replace it with --overwrite (overwrite=True), or choose another --out"
        )
    return False


def _clean_stale_temps(out: Path) -> None:
    """Remove temporary files of this trainer left by a process killed while writing."""
    for name in RUN_FILES:
        for stale in out.glob(f".{name}{TMP_TAG}*.tmp"):
            stale.unlink(missing_ok=True)


def open_run(
    cfg: TrainConfig | None,
    out: Path,
    resume: bool | str,
    overwrite: bool,
    change_lr: bool,
) -> tuple[TrainConfig, bool]:
    """Step 1: the run's configuration and whether it resumes ``out/last.safetensors``; every
    conflict (a run already there, a config that differs from the checkpoint's) is refused."""
    if resume not in (True, False, "auto"):
        raise UserError(f"resume must be True, False or 'auto', got {resume!r}")
    resuming = _check_out_dir(out, resume, overwrite)
    last = out / "last.safetensors"
    if resuming:
        cfg = _resume_config(cfg, read_metadata(last), last, change_lr)
    elif cfg is None:
        raise UserError("a training config is needed to start a new run (cfg=None)")
    cfg.validate()  # the config may have been changed in place since it was made
    return cfg, resuming


def build_run(
    cfg: TrainConfig, dev: torch.device, out: Path, resuming: bool, init: str | Path | None
) -> tuple[DILRAN, torch.optim.Optimizer, dict[str, list], int]:
    """Step 2: the model and its Adam optimiser, fresh (or from ``init``) or restored from the
    last checkpoint; returns them with the history so far and the first epoch to run."""
    seed_everything(cfg.seed)
    model = DILRAN(cfg.model_config()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: dict[str, list] = {k: [] for k in _HISTORY}
    _clean_stale_temps(out)
    if not resuming:
        if init is not None:
            init_weights(model, init)
        return model, opt, history, 0
    last = out / "last.safetensors"
    model, meta = load_checkpoint(last, model, opt, map_location=dev)
    if not isinstance(meta.get("history"), dict) or not is_int(meta.get("epoch"), 0):
        raise CheckpointError(f"cannot resume {last}: its header lacks history or epoch")
    history = meta["history"]
    # checkpoints written before the rate was recorded ran at their config's rate
    saved_lr = meta["train_config"].get("lr", cfg.lr)
    history.setdefault("lr", [saved_lr] * len(history["train_loss"]))
    for group in opt.param_groups:
        group["lr"] = cfg.lr
    return model, opt, history, meta["epoch"]


def _accelerate(model: DILRAN, cfg: TrainConfig, dev: torch.device):
    """Mixed precision (bfloat16 where native, else float16 with a loss scaler) and channels-last
    memory on a GPU; nothing on a CPU. Returns the model, the autocast dtype and the scaler."""
    use_amp = amp_dtype(dev) if cfg.amp else None
    scaler = torch.amp.GradScaler("cuda") if use_amp == torch.float16 else None
    if cfg.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    return model, use_amp, scaler


def training_data(
    cfg: TrainConfig, dev: torch.device, out: Path, replace_run: bool
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Step 3: the training images (N, 1, H, W) and the validation images (centre crops), and
    where they came from; with ``replace_run`` the old run's files go once the data are read."""
    train_x, source = _images(cfg, "train")
    val_x, _ = _images(cfg, "val")
    if cfg.crop is not None and cfg.crop > min(train_x.shape[-2:]):
        raise UserError(
            f"crop {cfg.crop} is larger than the training images {tuple(train_x.shape[-2:])}"
        )
    if replace_run:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    val_x = _centre(val_x[: cfg.val_limit], cfg.val_crop)
    if cfg.crop is None and not cfg.augment:  # whole images, as the paper: keep them on the device
        train_x = train_x.to(dev)
    return train_x, val_x, source


def fit_epoch(
    model: DILRAN,
    opt: torch.optim.Optimizer,
    loss_fn,
    train_x: torch.Tensor,
    cfg: TrainConfig,
    epoch: int,
    amp: bool | torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = True,
) -> float:
    """Step 4, once per epoch: ``steps`` optimiser steps (:func:`train_step`) on shuffled
    batches of ``train_x`` (N, 1, H, W), each image a random view (crop, flips) when the config
    asks; returns the epoch's mean training loss. The shuffle is seeded by ``cfg.seed`` and the
    epoch, so a resumed run sees the batches an uninterrupted one would."""
    steps = epoch_steps(cfg, len(train_x))
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    passes = math.ceil(steps * cfg.batch_size / len(train_x))  # enough shuffled passes
    order = torch.cat([torch.randperm(len(train_x), generator=g) for _ in range(passes)])
    dev = next(model.parameters()).device
    model.train()
    total, seen = 0.0, 0
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
    for step in bar:
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x = _random_views(train_x[idx], cfg.crop, cfg.augment, g).to(dev)
        loss = train_step(model, opt, loss_fn, x, amp, scaler)
        check_loss(loss, epoch, step)
        total += loss.item() * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / seen


def epoch_steps(cfg: TrainConfig, n_images: int) -> int:
    """Optimiser steps per epoch: ``steps_per_epoch``, else one pass over the images."""
    return cfg.steps_per_epoch or math.ceil(n_images / cfg.batch_size)


def _run_meta(cfg, train_x, val_x, source, dev, notes, init) -> dict:
    """What every checkpoint of the run records besides its epoch and history."""
    return {
        "train_config": asdict(cfg),
        "split": f"{cfg.split} (train: {len(train_x)} images, val: {len(val_x)})",
        "data": source,
        "perceptual": _perceptual_note(cfg),
        "package_version": __version__,
        "git_commit": git_commit(),
        "device": str(dev),
        "torch_version": torch.__version__,
        "notes": notes,
        "init": None if init is None else str(init),
    }


def _check_limits(max_epochs: int | None, time_budget_s: float | None) -> None:
    if max_epochs is not None and not is_int(max_epochs, 0):
        raise UserError(f"max_epochs must be None or an integer >= 0, got {max_epochs!r}")
    if time_budget_s is not None and not (
        isinstance(time_budget_s, (int, float)) and time_budget_s > 0
    ):
        raise UserError(f"time_budget_s must be None or a number > 0, got {time_budget_s!r}")


def train(
    cfg: TrainConfig | None,
    out_dir: str | Path,
    resume: bool | str = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    max_epochs: int | None = None,
    time_budget_s: float | None = None,
    notes: str | None = None,
    change_lr: bool = False,
    init: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[DILRAN, dict]:
    """Train an autoencoder as in Sec. 4.2; checkpoints go to ``out_dir`` (``last``, ``best``).

    ``out_dir`` must not hold a run already (``last``/``best`` checkpoints) unless ``resume``
    or ``overwrite`` (which replaces that run's files, and only those) is given.
    ``resume=True`` continues from ``out_dir/last.safetensors`` and raises when it is absent;
    ``resume="auto"`` continues when it is present and else starts a new run. On resume the
    configuration comes from the checkpoint: ``cfg`` may be None, or must match it except for
    ``epochs`` and ``data_root`` (so a finished run can be extended; with ``change_lr`` also
    ``lr``: the optimiser's state is kept and it continues at ``cfg.lr``, e.g. a second phase at
    a lower rate); a conflict is named as ``field: checkpoint value -> given value``. Every
    option is checked before any work (:class:`UserError`). The history records every epoch's
    learning rate (``lr``).
    ``init`` starts a new run from other weights (a checkpoint file or a shipped name): every
    parameter is copied by name and must match in shape, while the config may differ where no
    parameter depends on it (e.g. a reconstructor without activations); ignored on resume.
    ``max_epochs`` stops this call after that many epochs, ``time_budget_s`` after the epoch
    that passes that many seconds (the run can be resumed later). ``notes`` go into the metadata.
    Returns the model (with the last weights) and the metadata, whose ``history`` holds the
    train and validation loss of every epoch.
    """
    out = Path(out_dir)
    _check_limits(max_epochs, time_budget_s)
    dev = resolve_device(device)
    cfg, resuming = open_run(cfg, out, resume, overwrite, change_lr)
    model, opt, history, start = build_run(cfg, dev, out, resuming, init)
    model, amp, scaler = _accelerate(model, cfg, dev)
    loss_fn = FusionLoss(
        cfg.lambda1, cfg.lambda2, cfg.gradient, vgg_weights=cfg.vgg_weights, vgg_layer=cfg.vgg_layer
    ).to(dev)
    train_x, val_x, source = training_data(cfg, dev, out, overwrite and not resuming)
    base_meta = _run_meta(cfg, train_x, val_x, source, dev, notes, init)
    t_start = time.perf_counter()
    end = cfg.epochs if max_epochs is None else min(cfg.epochs, start + max_epochs)
    best = min(history["val_loss"], default=math.inf)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        loss = fit_epoch(model, opt, loss_fn, train_x, cfg, epoch, amp, scaler, progress)
        val = evaluate_loss(model, val_x, loss_fn, cfg.batch_size, dev, amp)
        record = dict(train_loss=loss, val_loss=val, epoch_time_s=time.perf_counter() - t0)
        record.update(steps=epoch_steps(cfg, len(train_x)), lr=opt.param_groups[0]["lr"])
        best = save_epoch(out, model, opt, base_meta, history, record, epoch + 1, best, progress)
        if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
            end = epoch + 1
            break
    return model, {**base_meta, "epoch": max(end, start), "history": history}


def init_weights(model: DILRAN, source: str | Path) -> DILRAN:
    """Copy every parameter of the weights ``source`` (a checkpoint file or a shipped name) into
    ``model`` by name; raises :class:`CheckpointError` naming what does not fit."""
    if not Path(source).is_file() and str(source) not in available():
        raise CheckpointError(
            f"cannot start from {source!r}: no such checkpoint file or shipped weights "
            f"({', '.join(available())})"
        )
    path = Path(source) if Path(source).is_file() else weights_path(str(source))
    src = load_checkpoint(path)[0].state_dict()
    own = model.state_dict()
    missing = sorted(set(own) - set(src))
    unexpected = sorted(set(src) - set(own))
    shapes = [k for k in set(own) & set(src) if own[k].shape != src[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"the weights {source!r} do not fit this model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {sorted(shapes)[:5]}"
        )
    model.load_state_dict(src)
    return model


def train_step(
    model: DILRAN,
    opt: torch.optim.Optimizer,
    loss_fn,
    x: torch.Tensor,
    amp: bool | torch.dtype | None = False,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One optimiser step of the autoencoder on the batch ``x`` (N, 1, H, W); returns the loss.

    ``amp`` runs the forward pass under autocast (``True``: :func:`dilran_lite.utils.amp_dtype`'s
    dtype, or a dtype); the loss is computed in float32. ``scaler`` scales the loss (float16).
    """
    with autocast(x.device, amp):
        y = model(x)
    loss = loss_fn(y.float(), x)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return loss.detach()


@torch.no_grad()
def evaluate_loss(
    model: DILRAN,
    images: torch.Tensor,
    loss_fn: FusionLoss,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    amp: bool | torch.dtype | None = False,
) -> float:
    """Mean loss of the autoencoder over ``images`` (N, 1, H, W), in eval mode."""
    model.eval()
    dev = torch.device(device)
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(dev)
        with autocast(dev, amp):
            y = model(x)
        total += loss_fn(y.float(), x).item() * len(x)
    return total / len(images)
