"""The training loss of Sec. 3.6, Eq. 6-9, for output I_o (N, 1, H, W) and M targets I_j.

    L = (MSE + lambda1 * grad) / (W * H) + lambda2 * percep,        lambda1 = lambda2 = 0.2

* MSE (Eq. 6) = sum_j ||I_o - I_j||_F^2, so MSE / (W H) is a per-pixel mean squared error;
* grad (Eq. 7) = sum_j ||dI_o/dx - dI_j/dx||^2 + ||dI_o/dy - dI_j/dy||^2 (Sobel by default,
  replicate padding so the map keeps its size; ``"diff"`` uses forward differences);
* percep (Eq. 8) = 1 / (C W_i H_i) sum_j ||phi(I_o) - phi(I_j)||^2 on VGG16's third block
  (relu3_3 by default; ``"pool3"`` takes the block's max-pool output). Inputs are repeated to
  3 channels and ImageNet-normalised.

Each term is averaged over the batch. In training (Sec. 4.2) the network is an autoencoder on
single images, so M = 1 and I_j is the input itself.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import urllib.error
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import VGGWeightsUnavailable
from .utils import display_path

__all__ = [
    "mse_term",
    "image_gradients",
    "gradient_term",
    "load_vgg16_features",
    "PerceptualLoss",
    "FusionLoss",
    "VGGWeightsUnavailable",
    "VGG16_URL",
]

#: torchvision's ImageNet VGG16 weights (``VGG16_Weights.IMAGENET1K_V1``).
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: End (exclusive) of each layer inside ``torchvision.models.vgg16().features``.
VGG_LAYERS = {"relu1_2": 4, "relu2_2": 9, "relu3_3": 16, "pool3": 17}


def _targets(targets: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [targets] if isinstance(targets, torch.Tensor) else list(targets)


def mse_term(output: torch.Tensor, targets) -> torch.Tensor:
    """Eq. 6 divided by W*H: sum over targets of the per-pixel mean squared error, batch mean."""
    return sum(F.mse_loss(output, t) for t in _targets(targets))


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def image_gradients(x: torch.Tensor, operator: str = "sobel") -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical derivatives of (N, C, H, W) images, each (N, C, H, W)."""
    n, c, h, w = x.shape
    if operator == "sobel":
        kx = _SOBEL_X.to(x)
        k = torch.stack([kx, kx.t()])[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
        g = g.view(n, c, 2, h, w)
        return g[:, :, 0], g[:, :, 1]
    if operator == "diff":
        gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
        gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
        return gx, gy
    raise ValueError(f"unknown gradient operator {operator!r}; choose 'sobel' or 'diff'")


def gradient_term(output: torch.Tensor, targets, operator: str = "sobel") -> torch.Tensor:
    """Eq. 7 divided by W*H: per-pixel mean of (dx difference)^2 + (dy difference)^2."""
    ox, oy = image_gradients(output, operator)
    total = 0
    for t in _targets(targets):
        tx, ty = image_gradients(t, operator)
        total = total + F.mse_loss(ox, tx) + F.mse_loss(oy, ty)
    return total


def _vgg_message(source: str, err: Exception) -> str:
    why = " ".join(str(err).split())  # one line, however long the library's message
    why = why if len(why) <= 160 else why[:157] + "..."
    cache = display_path(Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_URL).name)
    return (
        f"could not load ImageNet VGG16 weights from {source} ({why}). The perceptual loss "
        f"needs them. Either put torchvision's file {Path(VGG16_URL).name} at {cache} "
        "(download it on a connected machine), pass vgg_weights=PATH to the loss (or "
        "--vgg-weights PATH to `dilran-lite train`), or train without the perceptual term "
        "with lambda2 = 0 (--lambda2 0)."
    )


def load_vgg16_features(source: str | Path | None = None, layer: str = "relu3_3") -> nn.Sequential:
    """VGG16 ``features`` up to ``layer``, frozen, in eval mode.

    ``source``: None (torchvision's ImageNet weights: from the torch hub cache, else downloaded
    from :data:`VGG16_URL`), a URL (http(s):// or file://, fetched into the hub cache), or a local
    path to a state dict. A state dict of the whole VGG16 or of its ``features`` only (keys
    ``features.<i>.weight``) works; only the layers up to ``layer`` are read. Raises
    :class:`VGGWeightsUnavailable` with what to do when the weights cannot be had.
    """
    from torchvision.models import vgg16

    if layer not in VGG_LAYERS:
        raise ValueError(f"unknown VGG layer {layer!r}; choose from {sorted(VGG_LAYERS)}")
    src = str(source) if source is not None else VGG16_URL
    try:
        if "://" in src:
            quiet = io.StringIO()  # torch's "Downloading: <url> to <path>" (its stdout)
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                state = torch.hub.load_state_dict_from_url(
                    src, map_location="cpu", progress=False, weights_only=True
                )
        else:
            state = torch.load(src, map_location="cpu", weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError, pickle.PickleError) as err:
        raise VGGWeightsUnavailable(_vgg_message(src, err)) from err
    features = vgg16().features[: VGG_LAYERS[layer]]
    wanted = {k for k in features.state_dict()}
    sub = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    sub = {k: v for k, v in sub.items() if k in wanted}
    missing = wanted - set(sub)
    if missing:
        raise VGGWeightsUnavailable(
            _vgg_message(src, ValueError(f"not a VGG16 state dict: missing {sorted(missing)}"))
        )
    features.load_state_dict(sub)
    features.eval().requires_grad_(False)
    return features


class PerceptualLoss(nn.Module):
    """Eq. 8: mean squared difference of VGG16 features (relu3_3), summed over targets.

    ``backbone`` (any module mapping (N, 3, H, W) to features) is injectable; by default it is
    :func:`load_vgg16_features` (``vgg_weights``, ``layer``). Images in [0, 1] with 1 channel
    are repeated to 3, then ImageNet-normalised.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        vgg_weights: str | Path | None = None,
        layer: str = "relu3_3",
    ) -> None:
        super().__init__()
        self.backbone = (
            backbone if backbone is not None else load_vgg16_features(vgg_weights, layer)
        )
        self.backbone.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.backbone((x - self.mean) / self.std)

    def forward(self, output: torch.Tensor, targets) -> torch.Tensor:
        fo = self.features(output)
        return sum(F.mse_loss(fo, self.features(t)) for t in _targets(targets))


class FusionLoss(nn.Module):
    """Eq. 9: (MSE + lambda1 * grad) / (W H) + lambda2 * percep.

    With ``lambda2 == 0`` no VGG is loaded. ``forward`` returns the total; ``terms`` also the parts.
    """

    def __init__(
        self,
        lambda1: float = 0.2,
        lambda2: float = 0.2,
        gradient: str = "sobel",
        perceptual: PerceptualLoss | None = None,
        vgg_weights: str | Path | None = None,
        vgg_layer: str = "relu3_3",
    ) -> None:
        super().__init__()
        if lambda1 < 0 or lambda2 < 0:
            raise ValueError(f"loss weights must be >= 0, got lambda1={lambda1}, lambda2={lambda2}")
        self.lambda1, self.lambda2, self.gradient = lambda1, lambda2, gradient
        if lambda2 > 0 and perceptual is None:
            perceptual = PerceptualLoss(vgg_weights=vgg_weights, layer=vgg_layer)
        self.perceptual = perceptual if lambda2 > 0 else None

    def terms(self, output: torch.Tensor, targets) -> dict[str, torch.Tensor]:
        """The three terms and the total, as 0-d tensors."""
        mse = mse_term(output, targets)
        grad = gradient_term(output, targets, self.gradient)
        percep = (
            self.perceptual(output, targets)
            if self.perceptual is not None
            else output.new_zeros(())
        )
        total = mse + self.lambda1 * grad + self.lambda2 * percep
        return {"mse": mse, "gradient": grad, "perceptual": percep, "total": total}

    def forward(self, output: torch.Tensor, targets) -> torch.Tensor:
        return self.terms(output, targets)["total"]
