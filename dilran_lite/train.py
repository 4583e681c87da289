"""Training (Sec. 4.2) and checkpoints.

The fusion module is removed: the feature extractor and reconstructor are trained as an
autoencoder on single images of both modalities, with Adam (lr 1e-4), 100 epochs and the loss of
Eq. 9 (lambda1 = lambda2 = 0.2, VGG16 third block). Images of the split's ``train`` part are
trained on, its ``val`` part gives a validation loss per epoch.

Checkpoints are safetensors files (no pickle is ever loaded) with the metadata also written as
a JSON sidecar. Every write goes to a temporary file that replaces the target atomically, and a
checkpoint is written after every epoch, so an interruption (even ``kill -9``) loses at most the
epoch in progress; ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from .errors import UserError
from .losses import FusionLoss
from .model import DILRAN, PRESETS, ModelConfig
from .utils import default_device, seed_everything

__all__ = [
    "TrainConfig",
    "quick_config",
    "train",
    "train_step",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "CheckpointError",
]

FORMAT = "dilran-lite-checkpoint/1"


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

    def model_config(self) -> ModelConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        return ModelConfig.from_dict({**PRESETS[self.preset].to_dict(), **self.model})

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


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: unreadable, of another format, or of another model."""


def _git_commit() -> str | None:
    """The checkout's commit; ``$DILRAN_GIT_COMMIT`` for a copy of a checkout without ``.git``."""
    if os.environ.get("DILRAN_GIT_COMMIT"):
        return os.environ["DILRAN_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``; no partial file is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    model: DILRAN,
    meta: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    rng: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (and optionally the optimizer state) to ``path`` (.safetensors) atomically,
    with ``meta`` in the file's header and in a ``.json`` sidecar beside it.

    ``dtype`` (e.g. ``torch.float16`` for shipped weights: half the size) stores the model's
    floating-point tensors in that type; loading casts them back to the model's (float32).
    """
    path = Path(path)
    meta = {"format": FORMAT, "model_config": model.config.to_dict(), **(meta or {})}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        meta["stored_dtype"] = str(dtype).removeprefix("torch.")
    if optimizer is not None:
        state = optimizer.state_dict()
        for idx, st in state["state"].items():
            for key, val in st.items():
                t = val if torch.is_tensor(val) else torch.tensor(val)
                tensors[f"optim.{idx}.{key}"] = t.detach().cpu().contiguous()
        meta["optimizer_param_groups"] = state["param_groups"]
    if rng is not None:
        tensors["rng.torch"] = rng
    text = json.dumps(meta, indent=1, default=str)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"dilran_lite": text}))
    _atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def read_metadata(path: str | Path) -> dict:
    """The metadata stored in a checkpoint's header (the sidecar is only a readable copy)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({err}); dilran-lite never loads "
            "pickled .pt files: convert them with safetensors first"
        ) from err
    if "dilran_lite" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a dilran-lite checkpoint")
    meta = json.loads(header["dilran_lite"])
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def _config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: model has {da[k]!r}, checkpoint has {db[k]!r}" for k in da if da[k] != db[k]]


def load_checkpoint(
    path: str | Path,
    model: DILRAN | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[DILRAN, dict]:
    """Load a checkpoint into ``model`` (or a new model built from its config).

    Refuses, with every differing field named, a checkpoint whose model config differs from
    ``model``'s. Returns ``(model, metadata)``; restores ``optimizer`` when given.
    """
    path = Path(path)
    meta = read_metadata(path)
    # the config class of the given model (a learned-fusion layer has its own), else DILRAN's
    cfg = (ModelConfig if model is None else type(model.config)).from_dict(meta["model_config"])
    if model is None:
        model = DILRAN(cfg)
    elif model.config != cfg:
        diff = "; ".join(_config_diff(model.config, cfg))
        raise CheckpointError(f"checkpoint {path} was saved from another model config: {diff}")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
        for k in fh.keys():
            tensors[k] = fh.get_tensor(k)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if optimizer is not None:
        if "optimizer_param_groups" not in meta:
            raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                opt_state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict(
            {"state": opt_state, "param_groups": meta["optimizer_param_groups"]}
        )
    if "rng.torch" in tensors:
        meta["_rng"] = tensors["rng.torch"].cpu()
    return model, meta


def _images(cfg: TrainConfig, part: str) -> tuple[torch.Tensor, str]:
    """All single images (both modalities) of one split part as one (N, 1, H, W) tensor."""
    from .data import SingleImageDataset, load_pairs
    from .phantom import PhantomDataset

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
    from .data import augment_pair

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


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    max_epochs: int | None = None,
    time_budget_s: float | None = None,
    notes: str | None = None,
    change_lr: bool = False,
    init: str | Path | None = None,
) -> tuple[DILRAN, dict]:
    """Train an autoencoder as in Sec. 4.2; checkpoints go to ``out_dir`` (``last``, ``best``).

    ``resume`` continues from ``out_dir/last.safetensors`` (its config must match ``cfg``
    except for ``epochs``, so a finished run can be extended; with ``change_lr`` also except
    for ``lr``: the optimiser's state is kept and it continues at ``cfg.lr``, e.g. a second
    phase at a lower rate). The history records every epoch's learning rate (``lr``).
    ``init`` starts a new run from other weights (a checkpoint file or a shipped name): every
    parameter is copied by name and must match in shape, while the config may differ where no
    parameter depends on it (e.g. a reconstructor without activations); ignored on resume.
    ``max_epochs`` stops this call after that many epochs, ``time_budget_s`` after the epoch
    that passes that many seconds (the run can be resumed later). ``notes`` go into the metadata.
    Returns the model (with the last weights) and the metadata, whose ``history`` holds the
    train and validation loss of every epoch.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    dev = torch.device(device) if device is not None else default_device()
    seed_everything(cfg.seed)
    model = DILRAN(cfg.model_config()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: dict[str, list] = {
        "train_loss": [],
        "val_loss": [],
        "epoch_time_s": [],
        "steps": [],
        "lr": [],
    }
    start = 0
    last = out / "last.safetensors"
    for stale in out.glob(".*.tmp"):  # left by a process killed while writing
        stale.unlink()
    if resume and last.is_file():
        saved = asdict(TrainConfig.from_dict(read_metadata(last)["train_config"]))
        free = {"epochs", "lr"} if change_lr else {"epochs"}
        diff = [k for k, v in asdict(cfg).items() if k not in free and saved[k] != v]
        if diff:  # only the number of epochs (and with change_lr the rate) may change
            raise CheckpointError(f"cannot resume {last}: the training config differs in {diff}")
        model, meta = load_checkpoint(last, model, opt, map_location=dev)
        history, start = meta["history"], meta["epoch"]
        # checkpoints written before the rate was recorded ran at their config's rate
        history.setdefault("lr", [saved["lr"]] * len(history["train_loss"]))
        for group in opt.param_groups:
            group["lr"] = cfg.lr
    elif init is not None:
        init_weights(model, init)
    use_amp = cfg.amp and dev.type == "cuda"
    if cfg.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    loss_fn = FusionLoss(
        cfg.lambda1, cfg.lambda2, cfg.gradient, vgg_weights=cfg.vgg_weights, vgg_layer=cfg.vgg_layer
    ).to(dev)
    train_x, source = _images(cfg, "train")
    val_x, _ = _images(cfg, "val")
    val_x = _centre(val_x[: cfg.val_limit], cfg.val_crop)
    if cfg.crop is None and not cfg.augment:  # whole images, as the paper: keep them on the device
        train_x = train_x.to(dev)
    steps = cfg.steps_per_epoch or math.ceil(len(train_x) / cfg.batch_size)
    base_meta = {
        "train_config": asdict(cfg),
        "split": f"{cfg.split} (train: {len(train_x)} images, val: {len(val_x)})",
        "data": source,
        "perceptual": _perceptual_note(cfg),
        "package_version": __version__,
        "git_commit": _git_commit(),
        "device": str(dev),
        "torch_version": torch.__version__,
        "notes": notes,
        "init": None if init is None else str(init),
    }
    t_start = time.perf_counter()
    end = cfg.epochs if max_epochs is None else min(cfg.epochs, start + max_epochs)
    best = min(history["val_loss"], default=math.inf)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        # enough shuffled passes over the images for `steps` batches
        passes = math.ceil(steps * cfg.batch_size / len(train_x))
        order = torch.cat([torch.randperm(len(train_x), generator=g) for _ in range(passes)])
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = _random_views(train_x[idx], cfg.crop, cfg.augment, g).to(dev)
            loss = train_step(model, opt, loss_fn, x, use_amp)
            total += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        val = evaluate_loss(model, val_x, loss_fn, cfg.batch_size, dev, use_amp)
        history["train_loss"].append(total / seen)
        history["val_loss"].append(val)
        history["epoch_time_s"].append(time.perf_counter() - t0)
        history["steps"].append(steps)
        history["lr"].append(opt.param_groups[0]["lr"])
        meta = {**base_meta, "epoch": epoch + 1, "history": history}
        save_checkpoint(last, model, meta, optimizer=opt)
        if val < best:
            best = val
            save_checkpoint(out / "best.safetensors", model, {**meta, "best_val_loss": val})
        if progress:
            print(f"epoch {epoch + 1}: train {total / seen:.5f}  val {val:.5f}", flush=True)
        if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
            end = epoch + 1
            break
    meta = {**base_meta, "epoch": max(end, start), "history": history}
    return model, meta


def init_weights(model: DILRAN, source: str | Path) -> DILRAN:
    """Copy every parameter of the weights ``source`` (a checkpoint file or a shipped name) into
    ``model`` by name; raises :class:`CheckpointError` naming what does not fit."""
    from .pretrained import available, load_weights

    if not Path(source).is_file() and str(source) not in available():
        raise CheckpointError(
            f"cannot start from {source!r}: no such checkpoint file or shipped weights "
            f"({', '.join(available())})"
        )
    src = load_weights(source).state_dict()
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
    model: DILRAN, opt: torch.optim.Optimizer, loss_fn, x: torch.Tensor, amp: bool = False
) -> torch.Tensor:
    """One optimiser step of the autoencoder on the batch ``x`` (N, 1, H, W); returns the loss.

    ``amp`` runs the forward pass under bfloat16 autocast; the loss is computed in float32.
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        y = model(x)
    loss = loss_fn(y.float(), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


@torch.no_grad()
def evaluate_loss(
    model: DILRAN,
    images: torch.Tensor,
    loss_fn: FusionLoss,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> float:
    """Mean loss of the autoencoder over ``images`` (N, 1, H, W), in eval mode."""
    model.eval()
    dev = torch.device(device)
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            y = model(x)
        total += loss_fn(y.float(), x).item() * len(x)
    return total / len(images)
