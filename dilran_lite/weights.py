"""The weights that ship inside the package: where they are and what each is.

``dilran_lite/weights/<name>.safetensors`` (a checkpoint, :mod:`dilran_lite.checkpoint`) with a
``<name>.json`` sidecar that says how it was trained (config, data, epochs, loss history, whether
the perceptual term was used, commit). Loading them is :mod:`dilran_lite.pretrained`'s job.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CheckpointError

__all__ = ["WEIGHTS_DIR", "DEFAULT_WEIGHTS", "available", "weights_path", "weights_info"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = "dilran-paper"


def available() -> list[str]:
    """Names of the shipped weights."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def weights_path(name: str) -> Path:
    """The file of the shipped weights ``name``; a ``CheckpointError`` listing the names when
    there is none (a name is never taken as a path)."""
    if str(name) in available():
        return WEIGHTS_DIR / f"{name}.safetensors"
    raise CheckpointError(
        f"no shipped weights named {name!r} and no such file; available: "
        f"{', '.join(available())}, or a path to a .safetensors checkpoint"
    )


def weights_info(name: str) -> dict:
    """The sidecar metadata of the shipped weights ``name``."""
    return json.loads(weights_path(name).with_suffix(".json").read_text())
