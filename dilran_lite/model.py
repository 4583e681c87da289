"""The DILRAN fusion network (Zhou, Xu, Zhang, arXiv 2212.04661, Sec. 3), one class per block.

Shapes: images are (N, 1, H, W) floats in [0, 1]; features are (N, width, H, W). Every convolution
keeps the spatial size (3x3 with padding = dilation), and each soft mask is downsampled by 2 and
upsampled back to the exact input size, so any H, W >= 8 works without padding or cropping.

Where the paper's text is silent we chose as follows (each is a constructor argument):

* ``activation="relu"`` after every convolution except the last one of the network;
* ``norm="none"``: the text names no normalisation. The published code has BatchNorm, left in
  training mode at test time (the book's appendix); ``norm="batch"`` or ``"instance"``
  restores a norm;
* ``mask_activation="sigmoid"`` ends every soft mask, Eq. 1 and Eq. 2 alike ("a downsample-upsample
  block with an activation function"); ``"none"`` leaves Eq. 2's mask unbounded;
* ``share_pyramid_weights=False``: CB1, CB2, CB3 have their own weights and are composed,
  P1(P2(P3(x))), as Eq. 2 says (the published code reuses one convolution and sums three paths);
* ``skip="attention"``: the "residual attention network between shallow and deep features" of
  Sec. 3.3 is a residual attention block on the shallow features whose output is added to the
  deep ones (``"identity"`` adds the shallow features themselves, ``"none"`` drops the link);
* ``recon_activation=True``: activations between the reconstructor's three convolutions, none after
  the last (``out_activation=None``; ``"sigmoid"`` bounds the output). With
  ``recon_activation=False`` the reconstructor is affine, as in the published code, and fusing with
  one global weight is then exactly a weighted average of the two reconstructions.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import fuse_features
from .utils import as_image_batch

__all__ = [
    "ModelConfig",
    "PRESETS",
    "ConvAct",
    "ResidualAttentionBlock",
    "ConvBlock",
    "PyramidAttention",
    "DILRANBlock",
    "FeatureExtractor",
    "Reconstructor",
    "DILRAN",
    "build_model",
    "count_parameters",
    "count_macs",
]

MIN_SIZE = 8


@dataclass(frozen=True)
class ModelConfig:
    """Every choice that shapes the network; stored in checkpoints and compared on load."""

    width: int = 64
    in_channels: int = 1
    dilations: tuple[int, ...] = (1, 3, 5)
    activation: str = "relu"
    norm: str = "none"
    mask_activation: str = "sigmoid"
    share_pyramid_weights: bool = False
    skip: str = "attention"
    recon_widths: tuple[int, ...] = (64, 32)
    recon_activation: bool = True
    out_activation: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        d["recon_widths"] = list(self.recon_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("dilations", "recon_widths"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


#: ``paper``: Sec. 3 as written (64 channels, reconstructor 64-32-1).
#: ``lite``: 16 channels and a 16-16-1 reconstructor, ~16x fewer multiply-accumulates; trains on a
#: CPU in minutes and is what the notebooks' quick mode uses.
PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    "lite": ModelConfig(width=16, recon_widths=(16, 16)),
}

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "prelu": lambda: nn.PReLU(),
    "gelu": lambda: nn.GELU(),
    "silu": lambda: nn.SiLU(inplace=True),
}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _norm(name: str, channels: int) -> nn.Module:
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {name!r}; choose from ['batch', 'instance', 'none']")


def _mask_activation(name: str) -> nn.Module:
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown mask_activation {name!r}; choose 'sigmoid' or 'none'")


class ConvAct(nn.Sequential):
    """Convolution, optional norm, optional activation: (N, c_in, H, W) -> (N, c_out, H, W)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int = 3,
        dilation: int = 1,
        norm: str = "none",
        activation: str | None = "relu",
    ) -> None:
        padding = dilation * (kernel - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, padding=padding, dilation=dilation, bias=norm == "none"),
            _norm(norm, c_out),
        ]
        if activation is not None:
            layers.append(_activation(activation))
        super().__init__(*layers)


class SoftMask(nn.Module):
    """Downsample (max-pool 2) -> 3x3 conv -> activation -> 3x3 conv -> upsample -> mask activation.

    (N, c_in, H, W) -> (N, c_out, H, W), values in (0, 1) with the default sigmoid.
    """

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.down = nn.MaxPool2d(2, ceil_mode=True)
        self.body = nn.Sequential(
            ConvAct(c_in, c_out, 3, norm=cfg.norm, activation=cfg.activation),
            ConvAct(c_out, c_out, 3, norm="none", activation=None),
        )
        self.act = _mask_activation(cfg.mask_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.body(self.down(x))
        m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.act(m)


class ResidualAttentionBlock(nn.Module):
    """Eq. 1: F(x) = (1 + S(x)) * T(x), trunk T = convolutions, S = soft mask.

    ``trunk_kernel`` 1 gives the shallow block of Sec. 3.3 (a 1x1 convolution to ``c_out``).
    (N, c_in, H, W) -> (N, c_out, H, W).
    """

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig, trunk_kernel: int = 3) -> None:
        super().__init__()
        self.trunk = ConvAct(c_in, c_out, trunk_kernel, norm=cfg.norm, activation=cfg.activation)
        self.mask = SoftMask(c_in, c_out, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 + self.mask(x)) * self.trunk(x)


class ConvBlock(nn.Sequential):
    """CB_k of the pyramid: ``depth`` consecutive 3x3 convolutions (receptive field 2*depth+1).

    ``last_activation=False`` leaves the last convolution linear (the end of a soft mask, which
    is followed by the mask activation instead).
    """

    def __init__(
        self, c_in: int, c_out: int, depth: int, cfg: ModelConfig, last_activation: bool = True
    ) -> None:
        super().__init__(
            *[
                ConvAct(
                    c_in if i == 0 else c_out,
                    c_out,
                    3,
                    norm=cfg.norm if last_activation or i < depth - 1 else "none",
                    activation=cfg.activation if last_activation or i < depth - 1 else None,
                )
                for i in range(depth)
            ]
        )


class PyramidAttention(nn.Module):
    """Eq. 2: F(x) = (1 + P1(P2(P3(x)))) * C(x).

    CB3, CB2, CB1 hold three, two and one 3x3 convolutions (7x7, 5x5, 3x3 receptive fields) and
    are applied in that order; C is one 3x3 convolution. The mask's last convolution (in CB1) has
    no activation of its own and is followed by ``mask_activation``, so the mask spans (0, 1).
    With ``share_pyramid_weights`` one 3x3 convolution (c_out -> c_out, no normalisation) is
    reused by every layer of CB1-CB3 after an input projection, as in the published code (which
    also sums the three paths instead of composing them; that variant is not built here).
    (N, c_in, H, W) -> (N, c_out, H, W).
    """

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.conv = ConvAct(c_in, c_out, 3, norm=cfg.norm, activation=cfg.activation)  # C(x)
        if cfg.share_pyramid_weights:
            conv = nn.Conv2d(c_out, c_out, 3, padding=1)  # one convolution, used six times
            self.p3 = nn.Sequential(
                ConvAct(c_in, c_out, 3, norm=cfg.norm, activation=cfg.activation),
                *[conv, _activation(cfg.activation)] * 2,
            )
            self.p2 = nn.Sequential(*[conv, _activation(cfg.activation)] * 2)
            self.p1 = nn.Sequential(conv)
        else:
            self.p3 = ConvBlock(c_in, c_out, 3, cfg)
            self.p2 = ConvBlock(c_out, c_out, 2, cfg)
            self.p1 = ConvBlock(c_out, c_out, 1, cfg, last_activation=False)
        self.mask_act = _mask_activation(cfg.mask_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask_act(self.p1(self.p2(self.p3(x))))
        return (1 + mask) * self.conv(x)


class DILRANBlock(nn.Module):
    """Fig. 4: {1, 3, 5}-dilated 3x3 convolutions, concatenated, then pyramid attention.

    (N, width, H, W) -> (N, width, H, W); the concatenation has ``len(dilations) * width`` channels.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.width
        self.branches = nn.ModuleList(
            ConvAct(w, w, 3, dilation=d, norm=cfg.norm, activation=cfg.activation)
            for d in cfg.dilations
        )
        self.pyramid = PyramidAttention(w * len(cfg.dilations), w, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multi_scale = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.pyramid(multi_scale)


class FeatureExtractor(nn.Module):
    """Sec. 3.3: shallow residual attention (1x1 trunk) -> DILRAN, plus a shallow-to-deep link.

    (N, in_channels, H, W) image -> (N, width, H, W) deep features.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.shallow = ResidualAttentionBlock(cfg.in_channels, cfg.width, cfg, trunk_kernel=1)
        self.dilran = DILRANBlock(cfg)
        if cfg.skip == "attention":
            self.skip: nn.Module | None = ResidualAttentionBlock(cfg.width, cfg.width, cfg)
        elif cfg.skip == "identity":
            self.skip = nn.Identity()
        elif cfg.skip == "none":
            self.skip = None
        else:
            raise ValueError(f"unknown skip {cfg.skip!r}; choose 'attention', 'identity' or 'none'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.shallow(x)
        deep = self.dilran(shallow)
        return deep if self.skip is None else deep + self.skip(shallow)


class Reconstructor(nn.Module):
    """Sec. 3.5, Fig. 5: three 3x3 convolutions, width -> 64 -> 32 -> 1 (paper preset).

    (N, width, H, W) features -> (N, in_channels, H, W) image.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        act = cfg.activation if cfg.recon_activation else None
        chans = [cfg.width, *cfg.recon_widths]
        layers: list[nn.Module] = [
            ConvAct(c_in, c_out, 3, norm=cfg.norm if act else "none", activation=act)
            for c_in, c_out in zip(chans[:-1], chans[1:])
        ]
        layers.append(nn.Conv2d(chans[-1], cfg.in_channels, 3, padding=1))
        if cfg.out_activation == "sigmoid":
            layers.append(nn.Sigmoid())
        elif cfg.out_activation is not None:
            raise ValueError(f"unknown out_activation {cfg.out_activation!r}; None or 'sigmoid'")
        self.body = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.body(f)


class DILRAN(nn.Module):
    """The whole framework of Fig. 1: encoder, a fixed fusion strategy, decoder.

    ``forward(x)`` is the autoencoder trained in Sec. 4.2 (no fusion); ``fuse(a, b)`` is inference.
    """

    def __init__(self, config: ModelConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = replace(config or ModelConfig(), **overrides)
        self.config = cfg
        self.encoder = FeatureExtractor(cfg)
        self.decoder = Reconstructor(cfg)

    def _check(self, x: torch.Tensor, name: str) -> torch.Tensor:
        x = as_image_batch(x, name, channels=self.config.in_channels)
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(
                f"{name} is {x.shape[-2]}x{x.shape[-1]} pixels; DILRAN needs at least "
                f"{MIN_SIZE}x{MIN_SIZE} (its soft masks halve the resolution)"
            )
        param = next(self.parameters())
        return x.to(device=param.device, dtype=param.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) image in [0, 1] -> (N, width, H, W) deep features."""
        return self.encoder(self._check(x, "image"))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """(N, width, H, W) features -> (N, 1, H, W) image (unclamped)."""
        if f.ndim != 4 or f.shape[1] != self.config.width:
            raise ValueError(
                f"features must have shape (N, {self.config.width}, H, W), got {tuple(f.shape)}"
            )
        return self.decoder(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Autoencode: (N, 1, H, W) -> (N, 1, H, W)."""
        return self.decode(self.encode(x))

    def fuse(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        strategy: str = "sfnn-max",
        weights=None,
        return_weights: bool = False,
        clamp: bool = True,
    ):
        """Fuse two co-registered images (N, 1, H, W) in [0, 1] into one (N, 1, H, W).

        Encode both, fuse the features with ``strategy`` (a name of :mod:`dilran_lite.fusion`;
        SFNN: its one fast path) or with explicit ``weights`` (see there), decode. Returns the
        fused image, or ``(fused, (w1, w2))`` with ``return_weights``. Large images, tiles and
        memory limits: :func:`dilran_lite.inference.fuse_images`.
        """
        a = self._check(a, "first image")
        b = self._check(b, "second image")
        if a.shape != b.shape:
            raise ValueError(
                f"the two images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}"
            )
        f1, f2 = self.encode(torch.cat([a, b])).chunk(2)
        fused_f, wts = fuse_features(f1, f2, strategy, weights=weights, return_weights=True)
        out = self.decode(fused_f)
        if clamp:
            out = out.clamp(0, 1)
        return (out, wts) if return_weights else out



def build_model(preset: str = "paper", **overrides) -> DILRAN:
    """A DILRAN from a named preset (``"paper"`` or ``"lite"``) with optional config overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return DILRAN(PRESETS[preset], **overrides)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: DILRAN, size: int = 256, pair: bool = False) -> int:
    """Multiply-accumulates of every convolution for one size x size image.

    ``pair=True`` counts a fusion: two encodes and one decode. Counted with forward hooks from
    the actual output shapes (MACs = output elements * c_in / groups * kh * kw), on a copy of the
    model on PyTorch's ``meta`` device: shapes only, no memory, so any size is cheap.
    """
    if int(size) < MIN_SIZE:
        raise ValueError(f"size {size} is below DILRAN's minimum of {MIN_SIZE} pixels a side")
    total = 0

    def hook(mod: nn.Conv2d, inp, out) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    meta = copy.deepcopy(model).to("meta")
    # A shared convolution is counted at each use, as it runs each time.
    for m in meta.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    x = torch.zeros(1, model.config.in_channels, int(size), int(size), device="meta")
    with torch.no_grad():
        f = meta.encoder(x)
        enc = total
        meta.decoder(f)
    dec = total - enc
    return 2 * enc + dec if pair else total
