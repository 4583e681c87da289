"""Loading weights: the shipped ones by name (:mod:`dilran_lite.weights`) or a checkpoint file.

Each shipped model was trained by this project on the training part of a split of the Harvard
atlas MRI-CT pairs (the ``series`` split unless its name ends in ``-paper-split``), so test-split
numbers are honest; the JSON sidecar says how (config, data, epochs, loss history, whether the
perceptual term was used, commit). A learned-fusion checkpoint loads as a
:class:`~dilran_lite.learned.LearnedFusion`, any other as a :class:`~dilran_lite.model.DILRAN`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_checkpoint, read_metadata
from .learned import load_learned_fusion
from .model import DILRAN
from .weights import DEFAULT_WEIGHTS, WEIGHTS_DIR, available, weights_info, weights_path

__all__ = [
    "DEFAULT_WEIGHTS",
    "WEIGHTS_DIR",
    "available",
    "pretrained",
    "pretrained_info",
    "load_weights",
    "read_metadata",
]


def pretrained_info(name: str) -> dict:
    """The sidecar metadata of shipped weights ``name``."""
    return weights_info(name)


def load_weights(name_or_path: str | Path, device: str | torch.device = "cpu"):
    """A shipped name (see :func:`available`) or a path to a ``.safetensors`` checkpoint, in
    eval mode on ``device``: a DILRAN, or the learned fusion for a learned-fusion checkpoint."""
    p = Path(name_or_path)
    path = p if p.suffix == ".safetensors" or p.exists() else weights_path(str(name_or_path))
    if read_metadata(path).get("model_kind") == "learned-fusion":
        return load_learned_fusion(path, device)
    model, _ = load_checkpoint(path, map_location=device)
    return model.to(device).eval()


def pretrained(name: str = DEFAULT_WEIGHTS, device: str | torch.device = "cpu") -> DILRAN:
    """The shipped model ``name`` in eval mode on ``device``."""
    return load_weights(weights_path(name), device)
