"""RGB <-> YCbCr for colour fusion (MRI-PET, MRI-SPECT), Section 5 of the paper.

Convention: ITU-R BT.601 **full range**, as in JPEG/JFIF and Pillow's ``"YCbCr"`` mode. For RGB in
[0, 1] all three of Y, Cb and Cr lie in [0, 1], with Cb = Cr = 0.5 for grey pixels:

    Y  =  0.299 R + 0.587 G + 0.114 B
    Cb =  0.5 - 0.168736 R - 0.331264 G + 0.5 B
    Cr =  0.5 + 0.5 R - 0.418688 G - 0.081312 B

The chroma offset is 0.5 (127.5 on the 8-bit scale; JPEG and Pillow use 128, half a grey level
apart), so that Cb and Cr fill [0, 1] exactly. scikit-image's ``rgb2ycbcr`` uses the *studio*
range (Y in [16, 235]); we do not.
The round trip RGB -> YCbCr -> RGB is exact up to float rounding, so 8-bit images come back
unchanged after rounding to 1/255.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_luma", "fuse_colour"]

_FWD = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=torch.float64,
)
_INV = torch.tensor(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.344136, -0.714136],
        [1.0, 1.772, 0.0],
    ],
    dtype=torch.float64,
)
_OFFSET = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)


def _check(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (3, H, W) or (N, 3, H, W), got {tuple(x.shape)}")
    return x


def _apply(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    m = matrix.to(device=x.device, dtype=x.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, x)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB (3, H, W) or (N, 3, H, W) in [0, 1] -> YCbCr in [0, 1] (BT.601 full range)."""
    x = _check(x, "rgb")
    off = _OFFSET.to(device=x.device, dtype=x.dtype).view(3, 1, 1)
    return _apply(x, _FWD) + off


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """YCbCr (3, H, W) or (N, 3, H, W) (BT.601 full range) -> RGB clipped to [0, 1]."""
    x = _check(x, "ycbcr")
    off = _OFFSET.to(device=x.device, dtype=x.dtype).view(3, 1, 1)
    return _apply(x - off, _INV).clamp(0.0, 1.0)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """The Y channel of an RGB image: (3, H, W) -> (1, H, W), (N, 3, H, W) -> (N, 1, H, W)."""
    return rgb_to_ycbcr(x)[..., :1, :, :]


def fuse_colour(
    mri: torch.Tensor,
    rgb: torch.Tensor,
    fuse_y: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Fuse a grayscale MRI with a colour (PET/SPECT) image through the Y channel.

    ``mri``: (1, H, W) or (N, 1, H, W); ``rgb``: (3, H, W) or (N, 3, H, W), both in [0, 1].
    ``fuse_y(mri, y)`` receives the MRI and the colour image's Y channel with matching shapes
    ((1, H, W) or (N, 1, H, W)) and returns the fused Y of the same shape. Cb and Cr of the
    colour image are kept; the result is the fused RGB image, shaped like ``rgb``.
    """
    rgb = _check(rgb, "rgb")
    if not isinstance(mri, torch.Tensor) or mri.ndim != rgb.ndim or mri.shape[-3] != 1:
        shape = tuple(mri.shape) if isinstance(mri, torch.Tensor) else type(mri).__name__
        raise ValueError(
            f"mri must be a 1-channel tensor shaped like rgb ({rgb.ndim} dims), got {shape}"
        )
    if mri.shape[-2:] != rgb.shape[-2:] or (rgb.ndim == 4 and mri.shape[0] != rgb.shape[0]):
        raise ValueError(
            f"mri {tuple(mri.shape)} and rgb {tuple(rgb.shape)} differ in batch or spatial size"
        )
    ycc = rgb_to_ycbcr(rgb)
    y = ycc[..., :1, :, :]
    fused = fuse_y(mri.to(ycc.dtype), y)
    if not isinstance(fused, torch.Tensor) or fused.shape != y.shape:
        got = tuple(fused.shape) if isinstance(fused, torch.Tensor) else type(fused).__name__
        raise ValueError(f"fuse_y must return a tensor of shape {tuple(y.shape)}, got {got}")
    out = torch.cat([fused.to(ycc.dtype).clamp(0.0, 1.0), ycc[..., 1:, :, :]], dim=-3)
    return ycbcr_to_rgb(out)
