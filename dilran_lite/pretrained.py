"""Weights that ship inside the package (``dilran_lite/weights/<name>.safetensors`` + ``.json``).

Each was trained by this project on the training part of the ``series`` split of the Harvard
atlas MRI-CT pairs, so test-split numbers are honest; the JSON sidecar says how (config, data,
epochs, loss history, whether the perceptual term was used, commit).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .model import DILRAN
from .train import CheckpointError, load_checkpoint, read_metadata

DEFAULT_WEIGHTS = "dilran-paper"

__all__ = [
    "DEFAULT_WEIGHTS",
    "WEIGHTS_DIR",
    "available",
    "pretrained",
    "pretrained_info",
    "load_weights",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def available() -> list[str]:
    """Names of the shipped weights."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def _path(name: str) -> Path:
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"no shipped weights named {name!r} and no such file; available: "
            f"{', '.join(available())}, or a path to a .safetensors checkpoint"
        )
    return path


def pretrained_info(name: str) -> dict:
    """The sidecar metadata of shipped weights ``name``."""
    return json.loads(_path(name).with_suffix(".json").read_text())


def load_weights(name_or_path: str | Path, device: str | torch.device = "cpu") -> DILRAN:
    """A shipped name (see :func:`available`) or a path to a ``.safetensors`` checkpoint; a
    learned-fusion checkpoint gives a :class:`dilran_lite.learned.LearnedFusion`."""
    p = Path(name_or_path)
    path = p if p.suffix == ".safetensors" or p.exists() else _path(str(name_or_path))
    if read_metadata(path).get("model_kind") == "learned-fusion":
        from .learned import load_learned_fusion

        return load_learned_fusion(path, device)
    model, _ = load_checkpoint(path, map_location=device)
    return model.to(device).eval()


def pretrained(name: str = "dilran-paper", device: str | torch.device = "cpu") -> DILRAN:
    """The shipped model ``name`` in eval mode on ``device``."""
    return load_weights(_path(name), device)
