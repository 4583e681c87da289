"""Augmentation of co-registered images: the same random flips, rotation and crop on every image.

Used by :class:`dilran_lite.data.PairedDataset`, :class:`dilran_lite.data.SingleImageDataset`
and :class:`dilran_lite.phantom.PhantomDataset`; ``dilran_lite.data.augment_pair`` re-exports
:func:`augment_pair`. Depends on torch only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["augment_pair", "augment_images", "Augmenter"]


def _check_same_size(tensors: Sequence[torch.Tensor]) -> None:
    h, w = tensors[0].shape[-2:]
    for t in tensors[1:]:
        if t.shape[-2:] != (h, w):
            raise ValueError(
                f"augment_pair: images differ in size {tuple(tensors[0].shape)} vs {tuple(t.shape)}"
            )


def augment_images(
    tensors: Sequence[torch.Tensor],
    generator: torch.Generator | None = None,
    crop: int | None = None,
    flips: bool = True,
) -> list[torch.Tensor]:
    """One random transform applied alike to every tensor (..., H, W) of ``tensors``.

    ``flips``: a horizontal flip, a vertical flip (each p = 0.5) and a rotation by k * 90
    degrees (k uniform in 0..3). ``crop``: then a ``crop`` x ``crop`` window, random with
    ``flips``, centred without. Draws from ``generator`` (torch's global one when None).
    Returns contiguous tensors; images of different H, W raise ``ValueError``.
    """
    _check_same_size(tensors)
    out = list(tensors)
    if flips:
        r = torch.randint(0, 2, (3,), generator=generator)
        k = int(torch.randint(0, 4, (1,), generator=generator))
        if r[0]:
            out = [t.flip(-1) for t in out]
        if r[1]:
            out = [t.flip(-2) for t in out]
        if k:
            out = [torch.rot90(t, k, dims=(-2, -1)) for t in out]
    if crop is not None:
        h, w = out[0].shape[-2:]
        if crop < 1 or crop > min(h, w):
            raise ValueError(f"crop {crop} must be between 1 and the image size {h}x{w}")
        if flips:
            top = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
        else:  # no augmentation: a deterministic centre crop
            top, left = (h - crop) // 2, (w - crop) // 2
        out = [t[..., top : top + crop, left : left + crop] for t in out]
    return [t.contiguous() for t in out]


def augment_pair(
    a: torch.Tensor,
    b: torch.Tensor,
    generator: torch.Generator | None = None,
    crop: int | None = None,
    flips: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random transform on both images of a pair: (C, H, W) each, equal H and W.

    Horizontal flip, vertical flip (each p = 0.5) and a rotation by k * 90 degrees (k uniform in
    0..3), then a random ``crop`` x ``crop`` window when ``crop`` is given. With
    ``flips=False`` only the crop is applied, centred. Draws from ``generator`` (or torch's
    global generator when None).
    """
    x, y = augment_images([a, b], generator, crop, flips)
    return x, y


class Augmenter:
    """A per-dataset generator, reseeded once in each DataLoader worker so that workers differ."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self._worker: int | None = None

    def generator(self) -> torch.Generator:
        """The generator to draw from in the current process (main or DataLoader worker)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != info.id:
            self._worker = info.id
            self.gen.manual_seed((self.seed * 1_000_003 + info.seed) % (2**63))
        return self.gen
