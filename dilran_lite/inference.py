"""Running a fusion: one interface for every method, tiles and memory, writing the results.

Every object that fuses is called the same way, ``fuser(a, b) -> fused`` on (N, 1, H, W)
floats in [0, 1], whatever it is (:func:`make_fuser`):

- a :class:`~dilran_lite.model.DILRAN` with a fusion ``strategy`` (or explicit ``weights``),
  tiled above its tile size, with its memory checked first (:func:`fuse_images`);
- any other network module that fuses by ``module(a, b)`` (the learned fusion of chapter 10);
- the name of a baseline of :data:`dilran_lite.baselines.BASELINES`;
- a plain function ``(a, b) -> fused``.

The command line, :mod:`dilran_lite.evaluate`, the explorer and the experiments go through it. A
colour (PET/SPECT) second image takes the YCbCr path of Sec. 5 (:func:`fuse_pair`): the MRI is
fused with its Y channel, Cb and Cr are kept, and the result is converted back to RGB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ._io import atomic_write
from .baselines import BASELINES
from .color import fuse_colour
from .errors import UserError
from .fusion import LOCAL_STRATEGIES, PHI, STRATEGIES, fuse_features, sfnn_weights
from .model import DILRAN
from .tiling import HALO, check_limit, check_memory, default_tile, tiled_map

__all__ = [
    "Fuser",
    "DEFAULT_STRATEGY",
    "make_fuser",
    "fuse_images",
    "fuse_pair",
    "fuse_dataset",
    "fused_filename",
    "save_image",
    "image_format",
    "check_output_file",
    "check_output_folder",
]

#: ``fuser(a, b) -> fused``: (N, 1, H, W) floats in [0, 1] -> (N, 1, H, W)
Fuser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Method = Union[DILRAN, nn.Module, str, Callable]

#: the strategy a DILRAN fuses with when none is given (the paper's SFNN with max)
DEFAULT_STRATEGY = "sfnn-max"


def fuse_images(
    model: DILRAN,
    a: torch.Tensor,
    b: torch.Tensor,
    strategy: str = DEFAULT_STRATEGY,
    weights=None,
    tile: int | None = None,
    max_memory: float | None = None,
    return_weights: bool = False,
    clamp: bool = True,
):
    """:meth:`DILRAN.fuse` for images of any size: (N, 1, H, W) x 2 -> (N, 1, H, W).

    Images larger than ``tile`` pixels a side (default :func:`~dilran_lite.tiling.default_tile`)
    are encoded and decoded in tiles that overlap by ``HALO`` pixels, so memory grows with the
    pixels only through the stored features; the result equals the untiled one within 1e-5 for
    even sizes. ``max_memory`` (bytes): refuse, before any work, a fusion whose estimate
    (:func:`~dilran_lite.tiling.fusion_memory`) is larger.
    """
    n, _, h, w = a.shape
    tile = default_tile(model.config) if tile is None else int(tile)
    tiled = max(h, w) > tile + 2 * HALO
    check_memory(model.config, n, h, w, tile if tiled else None, max_memory)
    if not tiled:
        return model.fuse(a, b, strategy, weights, return_weights=return_weights, clamp=clamp)
    a, b = model._check(a, "first image"), model._check(b, "second image")
    out, wts = _fuse_tiled(model, a, b, strategy, weights, tile)
    out = out.clamp(0, 1) if clamp else out
    return (out, wts) if return_weights else out


def _fuse_tiled(model: DILRAN, a, b, strategy, weights, tile: int):
    """Features stored whole, encoder and decoder run tile by tile."""
    with torch.no_grad():
        f1 = tiled_map(model.encoder, a, model.config.width, tile)
        f2 = tiled_map(model.encoder, b, model.config.width, tile)
        name = strategy if isinstance(strategy, str) else None
        if weights is None and name and name.startswith("sfnn-") and name[5:] in PHI:
            weights = sfnn_weights(f1, f2, name[5:])
        if weights is not None or name in LOCAL_STRATEGIES:

            def decode(box: tuple) -> torch.Tensor:
                return model.decoder(fuse_features(f1[box], f2[box], strategy, weights=weights))

            out = tiled_map(decode, None, model.config.in_channels, tile, like=a)
            return out, (weights if weights is not None else (None, None))
        fused_f, wts = fuse_features(f1, f2, strategy, return_weights=True)
        return tiled_map(model.decoder, fused_f, model.config.in_channels, tile), wts


def _module_fuser(module: nn.Module, max_memory: float | None) -> Fuser:
    """A network that fuses by ``module(a, b)``; memory checked on its backbone's features."""
    dev = next(module.parameters()).device

    def fuser(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        backbone = getattr(module, "backbone", None)
        if max_memory is not None and hasattr(backbone, "config"):
            check_memory(backbone.config, a.shape[0], *a.shape[-2:], None, max_memory)
        return module(a.to(dev), b.to(dev)).cpu()

    return fuser


def _no_options(what: str, strategy, weights) -> None:
    if strategy is not None or weights is not None:
        raise UserError(f"{what} has no fusion strategy or weights to choose; leave --strategy out")


def make_fuser(
    method: Method,
    strategy: str | None = None,
    weights=None,
    tile: int | None = None,
    max_memory: float | None = None,
) -> Fuser:
    """The one way to fuse: ``make_fuser(method, ...)(a, b) -> fused`` (see the module doc).

    ``strategy`` and ``weights`` apply to a DILRAN only (default :data:`DEFAULT_STRATEGY`); any
    other method refuses them. Inputs may be on any device; the result is on the CPU.
    """
    max_memory = check_limit(max_memory)
    if isinstance(method, DILRAN):
        strategy = DEFAULT_STRATEGY if strategy is None else strategy
        if isinstance(strategy, str) and strategy not in STRATEGIES:
            raise UserError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
        dev = next(method.parameters()).device

        def fuse_dilran(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            out = fuse_images(method, a.to(dev), b.to(dev), strategy, weights, tile, max_memory)
            return out.cpu()

        return fuse_dilran
    if isinstance(method, nn.Module):
        _no_options(f"the {type(method).__name__} model", strategy, weights)
        return _module_fuser(method, max_memory)
    if isinstance(method, str):
        if method not in BASELINES:
            raise UserError(f"unknown baseline {method!r}; choose one of {sorted(BASELINES)}")
        _no_options(f"the {method} baseline", strategy, weights)
        return BASELINES[method]
    if callable(method):
        return method
    raise TypeError(f"cannot fuse with {type(method).__name__}: give a model, name or function")


def fuse_pair(
    model: Method,
    a: torch.Tensor,
    b: torch.Tensor,
    strategy: str | None = None,
    weights=None,
    max_memory: float | None = None,
) -> torch.Tensor:
    """Fuse image ``a`` (1, H, W) with ``b`` (1, H, W) or colour (3, H, W), floats in [0, 1].

    Returns (1, H, W), or (3, H, W) for a colour ``b``; batches (N, C, H, W) work the same way.
    ``model`` is anything :func:`make_fuser` takes (a DILRAN, the learned fusion, a baseline
    name, a function); ``max_memory`` (bytes) refuses a fusion whose estimated peak is larger,
    before any work.
    """
    single = a.ndim == 3
    a4, b4 = (a[None], b[None]) if single else (a, b)
    if b4.shape[1] not in (1, 3):
        raise ValueError(f"second image must have 1 or 3 channels, got shape {tuple(b.shape)}")
    fuser = make_fuser(model, strategy, weights, max_memory=max_memory)
    with torch.inference_mode():
        out = fuse_colour(a4, b4, fuser) if b4.shape[1] == 3 else fuser(a4, b4)
    return out[0] if single else out


def image_format(path: str | os.PathLike) -> str:
    """PIL's format name for the extension of ``path``; a ``UserError`` if it has none."""
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(
            f"output {path} has no image extension PIL can write; end the name with .png"
        )
    return fmt


def _check_writable(folder: Path) -> None:
    """``folder`` exists and can be written, or can be created; else a ``UserError``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{existing} is a file, so the folder {folder} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {existing} (permission denied); choose another folder")


def check_output_file(out: str | os.PathLike, inputs: list) -> Path:
    """Check, before any work, that the fused image can be written to ``out``: an image
    extension, not a folder, not one of ``inputs``, in a writable folder."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"output {out} is a folder; give a file name such as {out / 'fused.png'}")
    image_format(out)
    for p in inputs:
        if out.resolve() == Path(p).resolve():
            raise UserError(
                f"output {out} is also an input: it would be overwritten; choose another name"
            )
    _check_writable(out.parent)
    return out


def check_output_folder(out: str | os.PathLike, input_folder: str | os.PathLike) -> Path:
    """Check, before any work, that fused images can go into folder ``out``: not a file, not
    the input folder nor inside it (the fused files take the inputs' names), writable."""
    out, src = Path(out), Path(input_folder).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; with --data give a folder")
    r = out.resolve()
    if r == src or src in r.parents:
        raise UserError(
            f"output folder {out} is inside the input folder {input_folder}: the fused images "
            "would replace the inputs; choose a folder outside it"
        )
    _check_writable(out)
    return out


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a (1, H, W) or (3, H, W) image in [0, 1] as an 8-bit image (rounded), atomically
    and with the mode a new file gets under the umask (:func:`dilran_lite._io.atomic_write`)."""
    arr = (x.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    fmt = image_format(path)
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format=fmt))


def fused_filename(name: str) -> str:
    """The file a fused pair ``name`` is written to by :func:`fuse_dataset` (``fuse --data``)."""
    return name if str(name).endswith(".png") else f"{name}.png"


def fuse_dataset(
    model: Method,
    dataset,
    out_dir: str | os.PathLike,
    strategy: str | None = None,
    progress: bool = True,
    max_memory: float | None = None,
) -> list[Path]:
    """Fuse every ``(a, b, name)`` of ``dataset`` with ``model`` (anything :func:`make_fuser`
    takes) and write ``out_dir/<name>`` (PNG)."""
    written = []
    for a, b, name in tqdm(dataset, desc="fusing", disable=not progress):
        fname = fused_filename(name)
        fused = fuse_pair(model, a, b, strategy, max_memory=max_memory)
        written.append(save_image(fused, Path(out_dir) / fname))
    return written
