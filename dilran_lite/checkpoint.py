"""The checkpoint format, shared by both trainers and by the shipped weights.

A checkpoint is one ``.safetensors`` file: the model's tensors (``model.<name>``), optionally the
optimizer's state (``optim.<index>.<key>``) and the RNG state (``rng.torch``), and a JSON header
under the key ``dilran_lite`` with :data:`FORMAT`, the model config and whatever the trainer
records (training config, history, data, commit). A ``.json`` sidecar beside it holds a readable
copy of the header. Writes are atomic; every size and every tensor is checked on reading, before
anything large is allocated, and a bad one is a :class:`~dilran_lite.errors.CheckpointError`.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ._io import atomic_write
from .errors import CheckpointError, UserError
from .model import DILRAN, ModelConfig

__all__ = [
    "FORMAT",
    "RUN_FILES",
    "MAX_WIDTH",
    "is_int",
    "check_model_config",
    "save_checkpoint",
    "read_metadata",
    "read_tensors",
    "check_tensors",
    "check_finite",
    "load_checkpoint",
    "check_loss",
    "save_epoch",
    "read_run_result",
]

FORMAT = "dilran-lite-checkpoint/1"
#: The files a training run writes into its folder; ``--overwrite`` replaces only these.
RUN_FILES = ("last.safetensors", "last.json", "best.safetensors", "best.json")
#: Largest channel count and layer count a checkpoint or config may ask for.
MAX_WIDTH, MAX_LAYERS, MAX_DILATION = 1024, 16, 64

_CHOICES = {
    "activation": ("relu", "leaky_relu", "prelu", "gelu", "silu"),
    "norm": ("none", "batch", "instance"),
    "mask_activation": ("sigmoid", "none"),
    "skip": ("attention", "identity", "none"),
    "out_activation": (None, "sigmoid"),
}


def is_int(v: Any, low: int, high: int | None = None) -> bool:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= low
    return ok and (high is None or v <= high)


def check_model_config(d: Any, where: str = "model config") -> ModelConfig:
    """A :class:`ModelConfig` from the dict ``d``, every value checked for type and range first
    (so that, e.g., ``width = 200000`` is refused before any memory is allocated).

    Raises :class:`CheckpointError` naming ``where`` and the bad field.
    """
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: model_config must be a JSON object, got {d!r:.60}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown model_config keys {unknown}")
    full = {**ModelConfig().to_dict(), **d}
    bad: list[str] = []
    if not is_int(full["width"], 1, MAX_WIDTH):
        bad.append(f"width {full['width']!r} (an integer 1..{MAX_WIDTH})")
    if full["in_channels"] not in (1, 3) or isinstance(full["in_channels"], bool):
        bad.append(f"in_channels {full['in_channels']!r} (1 or 3)")
    for key, high in (("dilations", MAX_DILATION), ("recon_widths", MAX_WIDTH)):
        v = full[key]
        if (
            not isinstance(v, (list, tuple))
            or not 1 <= len(v) <= MAX_LAYERS
            or not all(is_int(x, 1, high) for x in v)
        ):
            bad.append(f"{key} {v!r:.60} (1..{MAX_LAYERS} integers 1..{high})")
    for key, allowed in _CHOICES.items():
        if full[key] not in allowed:
            bad.append(f"{key} {full[key]!r:.40} (one of {list(allowed)})")
    for key in ("share_pyramid_weights", "recon_activation"):
        if not isinstance(full[key], bool):
            bad.append(f"{key} {full[key]!r:.40} (true or false)")
    if bad:
        raise CheckpointError(f"{where}: model_config out of range: {'; '.join(bad)}")
    return ModelConfig.from_dict(d)


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
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"dilran_lite": text}))
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def read_metadata(path: str | Path) -> dict:
    """The metadata stored in a checkpoint's header (the sidecar is only a readable copy)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"checkpoint {path} {what}: give a .safetensors file")
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
    try:
        meta = json.loads(header["dilran_lite"])
    except ValueError as err:
        raise CheckpointError(f"{path}: the checkpoint header is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint header is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if "model_config" not in meta:
        raise CheckpointError(f"{path}: the checkpoint header lacks its model_config")
    return meta


def check_tensors(path: Path, state: dict[str, torch.Tensor], model: DILRAN) -> None:
    """Refuse, naming the tensors, model weights that are missing, unexpected, of another
    shape, not floating point where the model's are, or not finite (NaN, Inf)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {shapes[:5]}"
        )
    for k in sorted(state):
        t = state[k]
        if own[k].is_floating_point() and not t.is_floating_point():
            raise CheckpointError(
                f"checkpoint {path}: tensor {k} is stored as {str(t.dtype).removeprefix('torch.')}"
                ", not floating point: the file is damaged or was not written by dilran-lite"
            )
    check_finite(path, state, "tensor")



def config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: model has {da[k]!r}, checkpoint has {db[k]!r}" for k in da if da[k] != db[k]]


def read_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Every tensor of the checkpoint ``path`` by its stored name (``model.*``, ``optim.*``...)."""
    with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def check_finite(path: str | Path, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Refuse floating-point ``tensors`` holding NaN or infinity, naming the first one."""
    for k in sorted(tensors):
        t = tensors[k]
        if t.is_floating_point() and not torch.isfinite(t).all():
            n = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"checkpoint {path}: {what} {k} holds {n} NaN or infinite value(s): the run "
                "diverged or the file is damaged; use another checkpoint"
            )


def _restore_optimizer(path: Path, meta: dict, tensors: dict, optimizer) -> None:
    """Load the checkpoint's optimizer state into ``optimizer`` (finite values only)."""
    if "optimizer_param_groups" not in meta:
        raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
    state = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    check_finite(path, state, "optimizer state")
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        _, idx, key = k.split(".", 2)
        opt_state.setdefault(int(idx), {})[key] = v
    try:
        optimizer.load_state_dict(
            {"state": opt_state, "param_groups": meta["optimizer_param_groups"]}
        )
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path}: its optimizer state does not fit ({err})"
        ) from err


def load_checkpoint(
    path: str | Path,
    model: DILRAN | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[DILRAN, dict]:
    """Load a checkpoint into ``model`` (or a new model built from its config).

    Refuses, with every differing field named, a checkpoint whose model config differs from
    ``model``'s. Returns ``(model, metadata)``; restores ``optimizer`` when given (its state must
    be finite).
    """
    path = Path(path)
    meta = read_metadata(path)
    if model is not None and not isinstance(model.config, ModelConfig):
        # a model with its own config class (a learned-fusion layer): read the config with it
        cfg = type(model.config).from_dict(meta["model_config"])
    else:
        cfg = check_model_config(meta["model_config"], f"checkpoint {path}")
    if model is None:
        model = DILRAN(cfg)
    elif model.config != cfg:
        diff = "; ".join(config_diff(model.config, cfg))
        raise CheckpointError(f"checkpoint {path} was saved from another model config: {diff}")
    tensors = read_tensors(path, map_location)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    check_tensors(path, state, model)
    model.load_state_dict(state)
    if optimizer is not None:
        _restore_optimizer(path, meta, tensors, optimizer)
    if "rng.torch" in tensors:
        meta["_rng"] = tensors["rng.torch"].cpu()
    return model, meta


def check_loss(loss: torch.Tensor, epoch: int, step: int) -> None:
    """Stop a run whose loss is NaN or infinite, before the step and before any checkpoint of
    the epoch: the last checkpoint on disk stays the last finite one."""
    if not torch.isfinite(loss).all():
        raise UserError(
            f"training diverged: the loss is {float(loss.detach().float().mean())} at epoch "
            f"{epoch + 1}, step {step + 1}; the checkpoints on disk are from before it: lower the "
            "learning rate (--lr) and start again, or resume from the last checkpoint"
        )


def save_epoch(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    base_meta: dict,
    history: dict[str, list],
    record: dict[str, float],
    epoch: int,
    best: float,
    progress: bool = True,
) -> float:
    """The end of an epoch, for both trainers: append ``record`` (``train_loss``, ``val_loss``,
    ...) to ``history``, write ``out/last.safetensors`` (with the optimizer) and, at a new lowest
    validation loss, ``out/best.safetensors``; print a line. Returns the lowest loss so far."""
    for key, value in record.items():
        history.setdefault(key, []).append(value)
    meta = {**base_meta, "epoch": epoch, "history": history}
    save_checkpoint(out / "last.safetensors", model, meta, optimizer=optimizer)
    val = record["val_loss"]
    if val < best:
        best = val
        save_checkpoint(out / "best.safetensors", model, {**meta, "best_val_loss": val})
    if progress:
        print(f"epoch {epoch}: train {record['train_loss']:.5f}  val {val:.5f}", flush=True)
    return best


def read_run_result(out: Path, model: torch.nn.Module, fallback: dict) -> tuple:
    """The best epoch's weights loaded into ``model`` (eval mode) with the last checkpoint's
    metadata plus ``best_epoch`` and ``best_val_loss``; ``fallback`` when no epoch was saved."""
    last, best_path = out / "last.safetensors", out / "best.safetensors"
    meta = read_metadata(last) if last.is_file() else fallback
    if best_path.is_file():
        load_checkpoint(best_path, model)
        meta["best_epoch"] = read_metadata(best_path)["epoch"]
        meta["best_val_loss"] = min(meta["history"]["val_loss"])
    return model.eval(), meta
