"""A synthetic, co-registered head slice in two modalities: the offline default for every chapter.

The phantom has the contrasts that make MRI-CT fusion meaningful:

| tissue            | MRI (T2-like) | CT    |
|-------------------|---------------|-------|
| scalp             | 0.55          | 0.30  |
| skull             | 0.05 (dark)   | 0.95 (bright) |
| CSF + ventricles  | 0.90 (bright) | 0.12  |
| grey matter       | 0.55          | 0.32  |
| white matter      | 0.33          | 0.32  (no grey/white contrast in CT) |
| lesion (in WM)    | 0.80          | 0.32  (visible in MRI only) |

Geometry (head size and tilt, gyri, ventricles, lesion position and size) is drawn from
``numpy.random.default_rng(seed)``: the same seed always gives the same images. A light blur, a
smooth MRI bias field and a little noise make the images less cartoon-like.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, gaussian_filter

from .augment import augment_pair

__all__ = [
    "TISSUES",
    "MRI_VALUES",
    "CT_VALUES",
    "phantom_masks",
    "phantom_pair",
    "phantom_functional",
    "PhantomDataset",
]

TISSUES = ("scalp", "skull", "csf", "grey", "white", "lesion")
MRI_VALUES = {
    "scalp": 0.55,
    "skull": 0.05,
    "csf": 0.90,
    "grey": 0.55,
    "white": 0.33,
    "lesion": 0.80,
}
CT_VALUES = {"scalp": 0.30, "skull": 0.95, "csf": 0.12, "grey": 0.32, "white": 0.32, "lesion": 0.32}
# Functional uptake (PET/SPECT-like): grey matter high, lesion hot, bone and CSF cold.
UPTAKE = {"scalp": 0.08, "skull": 0.05, "csf": 0.05, "grey": 0.75, "white": 0.35, "lesion": 1.0}


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"phantom size must be an integer >= 32 pixels, got {size!r}")
    return int(size)


def phantom_masks(seed: int = 0, size: int = 256) -> dict[str, torch.Tensor]:
    """Tissue masks of the phantom for ``seed``: dict of bool tensors (size, size).

    Keys: ``head`` (everything that is not background), ``scalp``, ``skull``, ``csf`` (the
    subarachnoid rim and the ventricles), ``ventricles`` (subset of ``csf``), ``grey``,
    ``white`` (without the lesion), ``lesion``. The tissue masks in ``TISSUES`` do not overlap.
    """
    labels, ventricles = _labels(seed, _check_size(size))
    out = {name: torch.from_numpy(labels == i + 1) for i, name in enumerate(TISSUES)}
    out["head"] = torch.from_numpy(labels > 0)
    out["ventricles"] = torch.from_numpy(ventricles)
    return out


def _labels(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Label map (size, size) int: 0 background, i+1 for TISSUES[i]; plus the ventricle mask."""
    rng = np.random.default_rng(seed)
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    yy, xx = np.meshgrid(c, c, indexing="ij")
    # head outline: an ellipse, slightly tilted and shifted
    ang = rng.uniform(-0.12, 0.12)
    cx, cy = rng.uniform(-0.03, 0.03, size=2)
    ax, ay = 0.74 * rng.uniform(0.95, 1.05), 0.88 * rng.uniform(0.95, 1.05)
    xr = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
    yr = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
    r = np.sqrt((xr / ax) ** 2 + (yr / ay) ** 2)  # 1 on the head outline
    theta = np.arctan2(yr, xr)
    skull_out, skull_in = 0.955, 0.955 - rng.uniform(0.075, 0.095)
    brain_out = skull_in - 0.035
    # grey/white boundary with gyri: an angular modulation of the radius
    k = int(rng.integers(9, 14))
    wobble = 0.045 * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) + 0.02 * np.sin(
        (k + 5) * theta + rng.uniform(0, 2 * np.pi)
    )
    white_out = brain_out - 0.17 + wobble

    labels = np.zeros((size, size), dtype=np.int64)
    labels[r <= 1.0] = 1  # scalp
    labels[r <= skull_out] = 2  # skull
    labels[r <= skull_in] = 3  # CSF rim
    labels[r <= brain_out] = 4  # grey matter
    labels[r <= white_out] = 5  # white matter

    # two lateral ventricles: tilted ellipses either side of the midline
    vs = rng.uniform(0.85, 1.15)
    ventricles = np.zeros((size, size), dtype=bool)
    for side in (-1.0, 1.0):
        vx, vy = xr - side * 0.09 * ax, yr + 0.05 * ay
        t = side * 0.35
        u = vx * np.cos(t) + vy * np.sin(t)
        v = -vx * np.sin(t) + vy * np.cos(t)
        ventricles |= (u / (0.06 * ax * vs)) ** 2 + (v / (0.24 * ay * vs)) ** 2 <= 1.0
    labels[ventricles] = 3

    # lesion: a disc inside the white matter, away from the ventricles
    lesion = np.zeros_like(ventricles)
    white = labels == 5
    for _ in range(50):
        lr = rng.uniform(0.05, 0.08)
        px, py = rng.uniform(-0.55, 0.55), rng.uniform(-0.6, 0.6)
        disc = ((xr / ax - px) ** 2 + (yr / ay - py) ** 2) <= lr**2
        if disc.any() and white[disc].mean() > 0.98:
            lesion = disc
            break
    if not lesion.any():  # fall back: a small disc at the white-matter pixel farthest from others
        dist = distance_transform_edt(white)
        iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
        rad = max(2.0, min(dist[iy, ix] - 1.0, 0.06 * size / 2))
        ii, jj = np.ogrid[:size, :size]
        lesion = (ii - iy) ** 2 + (jj - ix) ** 2 <= rad**2
    labels[lesion] = 6
    return labels, ventricles


def _render(labels: np.ndarray, values: dict[str, float]) -> np.ndarray:
    lut = np.zeros(len(TISSUES) + 1, dtype=np.float64)
    for i, name in enumerate(TISSUES):
        lut[i + 1] = values[name]
    return lut[labels]


def phantom_pair(seed: int = 0, size: int = 256, return_masks: bool = False):
    """A co-registered (MRI, CT) phantom head slice, deterministic per ``seed``.

    Returns ``(mri, ct)``: float32 tensors (1, size, size) in [0, 1]; with ``return_masks=True``
    returns ``(mri, ct, masks)`` where ``masks`` is :func:`phantom_masks` for the same seed.
    """
    size = _check_size(size)
    labels, _ = _labels(seed, size)
    rng = np.random.default_rng([int(seed), 1])
    sigma = 0.6 * size / 256
    mri = gaussian_filter(_render(labels, MRI_VALUES), sigma)
    ct = gaussian_filter(_render(labels, CT_VALUES), sigma)
    # smooth multiplicative bias field in MRI (+-4 %), a little noise in both, inside the head
    bias = gaussian_filter(rng.standard_normal((size, size)), size / 6)
    bias = 1.0 + 0.04 * bias / (np.abs(bias).max() + 1e-12)
    head = gaussian_filter((labels > 0).astype(np.float64), sigma)
    mri = mri * bias + 0.012 * rng.standard_normal((size, size)) * head
    ct = ct + 0.008 * rng.standard_normal((size, size)) * head
    mri_t = torch.from_numpy(np.clip(mri, 0.0, 1.0).astype(np.float32))[None]
    ct_t = torch.from_numpy(np.clip(ct, 0.0, 1.0).astype(np.float32))[None]
    if return_masks:
        return mri_t, ct_t, phantom_masks(seed, size)
    return mri_t, ct_t


def _hot(x: np.ndarray) -> np.ndarray:
    """The 'hot' colour map (black, red, yellow, white): (H, W) in [0, 1] -> (3, H, W)."""
    return np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)])


def phantom_functional(seed: int = 0, size: int = 256) -> torch.Tensor:
    """A PET/SPECT-like colour image co-registered with :func:`phantom_pair` (same seed).

    Uptake is high in grey matter and in the lesion, low in bone and CSF, blurred to a
    functional image's low resolution and colour-mapped with 'hot'. float32 (3, size, size).
    """
    size = _check_size(size)
    labels, _ = _labels(seed, size)
    act = gaussian_filter(_render(labels, UPTAKE), 3.0 * size / 256)
    return torch.from_numpy(_hot(np.clip(act, 0.0, 1.0)).astype(np.float32))


class PhantomDataset(torch.utils.data.Dataset):
    """``n`` phantom pairs (seeds ``seed .. seed+n-1``), yielding ``(mri, ct, name)`` like
    :class:`dilran_lite.data.PairedDataset`; mri (1, size, size), the other (1, ...) for CT or
    (3, ...) for ``modality="PET"``/``"SPECT"`` (the colour map of :func:`phantom_functional`).
    Optional augmentation as in :func:`dilran_lite.augment.augment_pair`."""

    def __init__(
        self,
        n: int = 16,
        size: int = 256,
        seed: int = 0,
        modality: str = "CT",
        augment: bool = False,
        crop: int | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"PhantomDataset needs n >= 1 pairs, got {n}")
        modality = modality.upper()
        if modality not in ("CT", "PET", "SPECT"):
            raise ValueError(f"phantom modality must be CT, PET or SPECT, got {modality!r}")
        self.n, self.size, self.seed = int(n), _check_size(size), int(seed)
        self.augment, self.crop = augment, crop
        self.modalities = ("MRI", modality)
        self.names = [f"phantom_{self.seed + i:04d}" for i in range(self.n)]
        self.root = None
        kind = "MRI-CT" if modality == "CT" else f"MRI-{modality}"
        self.source = (
            f"synthetic phantom ({kind}, {self.n} pairs of {self.size}x{self.size}, "
            f"seeds {self.seed}..{self.seed + self.n - 1})"
        )
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._gen = torch.Generator().manual_seed(self.seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not -self.n <= i < self.n:
            raise IndexError(f"PhantomDataset index {i} out of range (n={self.n})")
        i = i % self.n
        if i not in self._cache:
            mri, ct = phantom_pair(self.seed + i, self.size)
            if self.modalities[1] != "CT":
                ct = phantom_functional(self.seed + i, self.size)
            other = ct
            self._cache[i] = (mri, other)
        a, b = self._cache[i]
        if self.augment or self.crop:
            a, b = augment_pair(a, b, self._gen, crop=self.crop, flips=self.augment)
        return a, b, self.names[i]

    def __repr__(self) -> str:
        return f"PhantomDataset({self.source})"
