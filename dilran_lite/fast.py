"""The fast inference path: the same fusion as :meth:`DILRAN.fuse`, with every speed trick.

:class:`FastFuser` wraps a trained :class:`~dilran_lite.model.DILRAN` and fuses batches of pairs:

* ``torch.inference_mode`` (no autograd bookkeeping);
* ``channels_last`` memory format (on by default on CUDA and for wide models on a CPU, where
  oneDNN's convolutions prefer it; the lite preset's 16 channels ran faster without it on the
  two-core test machine);
* mixed precision: ``torch.autocast`` in bfloat16 on CUDA (the SFNN strategy always runs in
  float32 or float64, whatever the network's dtype);
* optional ``torch.compile`` of the encoder and decoder (``compile=True``);
* the attention blocks' sigmoid and ``(1 + m) * t`` done in place, one pass each
  (:func:`in_place_inference`), on the fuser's own copy of the model;
* the SFNN weights of :func:`dilran_lite.fusion.sfnn_weights`, the package's one SFNN path
  (which :meth:`DILRAN.fuse` runs too): exact Gram eigenvalues in float64 split over
  single-threaded workers on a CPU, :func:`polar_nuclear_norms` on CUDA;
* one batched call for the whole batch (both images of every pair go through the encoder in one
  batch; one softmax and one eigenvalue call for all ``2 N C`` channel maps).

The result equals ``model.fuse(a, b, strategy)`` within a stated tolerance (``tests/test_fast.py``:
fused images 1e-5 in float32 on a CPU). Every stage can be timed separately
(:meth:`FastFuser.fuse_timed`), which ``benchmarks/run.py`` uses.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import (
    NUCLEAR_METHODS,
    PHI,
    fuse_features,
    polar_nuclear_norms,
    raw_nuclear_norms,
    sfnn_weights,
    single_threaded,
)
from .model import DILRAN, PyramidAttention, ResidualAttentionBlock, SoftMask

__all__ = [
    "NUCLEAR_METHODS",
    "FastFuser",
    "fast_fuse",
    "fast_nuclear_norms",
    "polar_nuclear_norms",
    "fast_sfnn_weights",
    "conv_floor",
    "in_place_inference",
    "single_threaded",
]

#: the most elements one intermediate tensor of :meth:`FastFuser.encode` may hold (2^31 - 1:
#: CUDA's bilinear upsampling in channels_last refused 512 x 64 x 256 x 256 on an H100)
MAX_TENSOR_ELEMENTS = 2**31 - 1


def fast_nuclear_norms(
    x: torch.Tensor, method: str = "gram64", workers: int | None = None
) -> torch.Tensor:
    """:func:`dilran_lite.fusion.nuclear_norms` (kept under this name for older callers)."""
    return raw_nuclear_norms(x, method, workers)


def fast_sfnn_weights(
    f1: torch.Tensor,
    f2: torch.Tensor,
    phi: str = "max",
    method: str | None = None,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dilran_lite.fusion.sfnn_weights` with the weights in float32 (N,)."""
    w1, _ = sfnn_weights(f1.float(), f2.float(), phi, method, workers)
    return w1, 1 - w1


class _InPlaceSoftMask(SoftMask):
    """:class:`SoftMask` with its activation applied in place (inference only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.body(self.down(x))
        m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if isinstance(self.act, nn.Sigmoid):
            return m.sigmoid_()
        return self.act(m)


class _InPlaceResidualAttention(ResidualAttentionBlock):
    """Eq. 1 as ``t += m * t`` in one in-place pass instead of ``(1 + m) * t`` (two passes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk(x)
        return t.addcmul_(self.mask(x), t)


class _InPlacePyramid(PyramidAttention):
    """Eq. 2 as ``c += mask * c``, the mask's sigmoid in place (inference only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.p1(self.p2(self.p3(x)))
        mask = mask.sigmoid_() if isinstance(self.mask_act, nn.Sigmoid) else self.mask_act(mask)
        c = self.conv(x)
        return c.addcmul_(mask, c)


_IN_PLACE = {
    SoftMask: _InPlaceSoftMask,
    ResidualAttentionBlock: _InPlaceResidualAttention,
    PyramidAttention: _InPlacePyramid,
}


def in_place_inference(model: nn.Module) -> nn.Module:
    """Swap the attention blocks of ``model`` (in place) for versions that, at inference, apply
    the mask's sigmoid and Eq. 1-2's ``(1 + m) * t`` in place: the same arithmetic up to
    rounding (``t + m t`` instead of ``(1 + m) t``), with fewer passes over memory and no new
    full-size buffers. Only for models that are not trained afterwards. Returns ``model``."""
    for mod in model.modules():
        fast_cls = _IN_PLACE.get(type(mod))
        if fast_cls is not None:
            mod.__class__ = fast_cls
    return model


def _default_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class FastFuser:
    """Fast fusion with a trained model: ``FastFuser(model)(a, b)`` == ``model.fuse(a, b)``.

    Parameters: ``device`` (default: the model's), ``amp`` (bfloat16 autocast; default on CUDA
    only), ``channels_last`` (default: on CUDA, and on a CPU for models of 32+ channels),
    ``compile`` (``torch.compile`` the encoder and decoder; compiling takes a while, and is only
    worth it for many calls), ``nuclear`` (one of :data:`NUCLEAR_METHODS`; default ``gram64`` on
    a CPU, ``polar`` on CUDA), ``workers`` (CPU threads for the eigenvalue problems),
    ``in_place`` (:func:`in_place_inference` on the copy). The model is copied, so the caller's
    model is left unchanged.
    """

    def __init__(
        self,
        model: DILRAN,
        device: str | torch.device | None = None,
        amp: bool | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        nuclear: str | None = None,
        workers: int | None = None,
        in_place: bool = True,
    ) -> None:
        import copy

        dev = torch.device(device) if device is not None else _default_device(model)
        cuda = dev.type == "cuda"
        self.device = dev
        self.amp = cuda if amp is None else bool(amp)
        self.amp_dtype = torch.bfloat16
        if channels_last is None:
            channels_last = cuda or model.config.width >= 32
        self.channels_last = channels_last
        self.nuclear = nuclear or ("polar" if cuda else "gram64")
        if self.nuclear not in NUCLEAR_METHODS:
            raise ValueError(f"unknown nuclear {self.nuclear!r}; choose from {NUCLEAR_METHODS}")
        self.workers = workers
        self.config = model.config
        m = copy.deepcopy(model).to(dev).eval().float()
        m.requires_grad_(False)
        if in_place:
            in_place_inference(m)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        self.model = m
        self._encoder: Callable[[torch.Tensor], torch.Tensor] = m.encoder
        self._decoder: Callable[[torch.Tensor], torch.Tensor] = m.decoder
        self.compiled = False
        if compile:
            self._encoder = torch.compile(m.encoder, dynamic=False)
            self._decoder = torch.compile(m.decoder, dynamic=False)
            self.compiled = True

    def __repr__(self) -> str:
        return (
            f"FastFuser(device={self.device}, amp={self.amp}, channels_last={self.channels_last}, "
            f"compile={self.compiled}, nuclear={self.nuclear!r})"
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch (N, 1, H, W) on the fuser's device, float32, in its memory format."""
        x = self.model._check(x, "image")  # noqa: SLF001 (the model's own input check)
        x = x.to(self.device, torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared images (M, 1, H, W) -> features (M, C, H, W) (bfloat16 under amp).

        Large batches are encoded in chunks so that no intermediate tensor (the widest holds
        ``3 * width`` channels) exceeds :data:`MAX_TENSOR_ELEMENTS`: some CUDA kernels (e.g. the
        soft masks' bilinear upsampling in channels_last) refuse larger outputs.
        """
        per_image = 3 * self.config.width * x.shape[-2] * x.shape[-1]
        chunk = max(1, MAX_TENSOR_ELEMENTS // per_image)
        with torch.inference_mode(), self._autocast():
            if len(x) <= chunk:
                return self._encoder(x)
            return torch.cat([self._encoder(part) for part in x.split(chunk)])

    def strategy(
        self, f1: torch.Tensor, f2: torch.Tensor, strategy: str = "sfnn-max"
    ) -> tuple[torch.Tensor, tuple]:
        """Fused features (float32) and the weights; SFNN uses :func:`fast_sfnn_weights`."""
        with torch.inference_mode():
            f1, f2 = f1.float(), f2.float()
            if isinstance(strategy, str) and strategy.startswith("sfnn-") and strategy[5:] in PHI:
                w = fast_sfnn_weights(f1, f2, strategy[5:], self.nuclear, self.workers)
                fused, _ = fuse_features(f1, f2, strategy, weights=w, return_weights=True)
                return fused, w
            return fuse_features(f1, f2, strategy, return_weights=True)

    def decode(self, f: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Features (N, C, H, W) -> image (N, 1, H, W) in float32, clamped to [0, 1]."""
        with torch.inference_mode(), self._autocast():
            out = self._decoder(f).float()
        return out.clamp(0, 1) if clamp else out

    def fuse(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        strategy: str = "sfnn-max",
        return_weights: bool = False,
        clamp: bool = True,
    ):
        """Fuse two image batches (N, 1, H, W) in [0, 1]: as :meth:`DILRAN.fuse`."""
        out, w, _ = self._run(a, b, strategy, clamp, timed=False)
        return (out, w) if return_weights else out

    __call__ = fuse

    def fuse_timed(
        self, a: torch.Tensor, b: torch.Tensor, strategy: str = "sfnn-max"
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Fuse and time each stage: ``{"encode", "strategy", "decode", "total"}`` in seconds
        (CUDA is synchronised between stages, which costs a little)."""
        out, _, times = self._run(a, b, strategy, True, timed=True)
        return out, times

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run(self, a, b, strategy, clamp, timed):
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        a, b = self.prepare(a), self.prepare(b)
        if a.shape != b.shape:
            raise ValueError(
                f"the two images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}"
            )
        f = self.encode(torch.cat([a, b]))
        if timed:
            self._sync()
            times["encode"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        f1, f2 = f.chunk(2)
        fused, w = self.strategy(f1, f2, strategy)
        if timed:
            self._sync()
            times["strategy"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if self.amp:
            fused = fused.to(self.amp_dtype)
        if self.channels_last:
            fused = fused.contiguous(memory_format=torch.channels_last)
        out = self.decode(fused, clamp=clamp)
        if timed:
            self._sync()
            times["decode"] = time.perf_counter() - t2
            times["total"] = time.perf_counter() - t0
        return out, w, times


def fast_fuse(
    model: DILRAN, a: torch.Tensor, b: torch.Tensor, strategy: str = "sfnn-max", **kwargs
) -> torch.Tensor:
    """One-off fast fusion: ``FastFuser(model, **kwargs).fuse(a, b, strategy)``."""
    return FastFuser(model, **kwargs).fuse(a, b, strategy)


def conv_floor(fuser: FastFuser, batch: int, size: int) -> Callable[[], None]:
    """A callable that runs only the convolutions of one fusion, as the fuser would run them.

    Method: one fusion of zero images is run with forward hooks on every ``nn.Conv2d`` that
    record the module and its input's shape, dtype and memory format, in call order (two
    encodes in one batch of ``2 * batch``, one decode of ``batch``). The callable then runs those
    modules in that order on preallocated inputs of those shapes (one per distinct shape),
    under the same autocast and inference mode: the soft masks' pooling and interpolation, the
    activations, the element-wise products and the strategy are all left out. Its time is the
    floor the whole pipeline can reach with these convolutions on this machine.
    """
    calls: list[tuple[nn.Conv2d, tuple, torch.dtype, bool]] = []

    def hook(mod: nn.Conv2d, inp: tuple, out: torch.Tensor) -> None:
        x = inp[0]
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        calls.append((mod, tuple(x.shape), x.dtype, cl))

    convs = [m for m in fuser.model.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    zeros = torch.zeros(batch, fuser.config.in_channels, size, size)
    try:
        # hooks do not fire inside a compiled graph: record on the eager modules
        enc, dec = fuser._encoder, fuser._decoder  # noqa: SLF001
        fuser._encoder, fuser._decoder = fuser.model.encoder, fuser.model.decoder
        fuser.fuse(zeros, zeros, "average")
    finally:
        fuser._encoder, fuser._decoder = enc, dec
        for h in handles:
            h.remove()
    inputs: dict[tuple, torch.Tensor] = {}
    for _, shape, dtype, cl in calls:
        key = (shape, dtype, cl)
        if key not in inputs:
            t = torch.rand(shape, device=fuser.device).to(dtype)
            inputs[key] = t.contiguous(memory_format=torch.channels_last) if cl else t
    plan = [(mod, inputs[(shape, dtype, cl)]) for mod, shape, dtype, cl in calls]

    def run() -> None:
        with torch.inference_mode(), fuser._autocast():  # noqa: SLF001
            for mod, x in plan:
                mod(x)
        fuser._sync()  # noqa: SLF001

    return run


def cpu_info() -> dict:
    """A short description of this machine's CPU (model name, logical cores)."""
    name = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": name, "logical_cores": os.cpu_count()}
