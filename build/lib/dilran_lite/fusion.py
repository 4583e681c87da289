"""Fixed fusion strategies (Sec. 3.4, 4.4): features f1, f2 (N, C, H, W) -> fused (N, C, H, W).

A strategy is a plain function ``(f1, f2, weights=None) -> (fused, (w1, w2))`` registered by name.
``w1``, ``w2`` are the weights it used: one scalar per pair, shape (N,), for SFNN and the averages;
a map (N, 1, H, W) for the per-pixel strategies; ``None`` where no weight exists (``max``).
``weights`` overrides them: a number ``w1`` (then ``w2 = 1 - w1``), a pair ``(w1, w2)``, or
tensors broadcastable to (N, 1, H, W); the fused features are then ``w1 * f1 + w2 * f2``.

SFNN, Eq. 3-5: S = softmax over channels; n_k = ||S_k||_* per channel (nuclear norm, the sum of
singular values of the H x W map); W1 = phi(n^1) / (phi(n^1) + phi(n^2)), W2 = 1 - W1.
phi is one of mean, max, sum and their squares. mean and sum differ by the constant C, so they
give the same weights (and so do mean^2 and sum^2): the paper's Table 1 rows for them cannot differ.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

__all__ = [
    "STRATEGIES",
    "PHI",
    "register",
    "get_strategy",
    "fuse_features",
    "nuclear_norms",
    "sfnn_weights",
    "sfnn_weights_reference",
]

Weights = Union[None, float, tuple, torch.Tensor]
Result = tuple[torch.Tensor, tuple]
Strategy = Callable[..., Result]

STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator: add a strategy to :data:`STRATEGIES` under ``name``."""

    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return deco


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; a clear error lists the known names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown fusion strategy {name!r}; choose from {sorted(STRATEGIES)}"
        ) from None


def _check_pair(f1: torch.Tensor, f2: torch.Tensor) -> None:
    if f1.ndim != 4 or f1.shape != f2.shape:
        raise ValueError(
            f"feature maps must both be (N, C, H, W) of one shape, got {tuple(f1.shape)} "
            f"and {tuple(f2.shape)}"
        )


def _as_weight(w, ref: torch.Tensor) -> torch.Tensor:
    """A scalar, (N,) or map weight as a tensor broadcastable to ref (N, C, H, W)."""
    w = torch.as_tensor(w, dtype=ref.dtype, device=ref.device)
    if w.ndim == 1:
        w = w.view(-1, 1, 1, 1)
    return w


def _override(weights: Weights, f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(weights, (tuple, list)):
        w1, w2 = weights
    else:
        w1 = weights
        w2 = 1 - torch.as_tensor(weights, dtype=f1.dtype, device=f1.device)
    return _as_weight(w1, f1), _as_weight(w2, f1)


def _weighted(
    f1: torch.Tensor, f2: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, weights: Weights
) -> Result:
    """``w1 * f1 + w2 * f2``, with ``weights`` (if given) replacing the computed w1, w2."""
    if weights is not None:
        w1, w2 = _override(weights, f1)
    fused = _as_weight(w1, f1) * f1 + _as_weight(w2, f1) * f2
    return fused, (w1, w2)


def nuclear_norms(x: torch.Tensor, method: str = "svd") -> torch.Tensor:
    """Nuclear norm of every channel: (N, C, H, W) -> (N, C), one batched call.

    ``method="svd"`` sums singular values (``torch.linalg.svdvals``); ``"gram"`` sums the square
    roots of the eigenvalues of the smaller Gram matrix X X^T (``eigvalsh``), exact up to rounding
    and faster on a GPU. Computed in float32 at least (float64 stays float64).
    """
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(x.shape)}")
    y = x if x.dtype == torch.float64 else x.float()
    if method == "svd":
        return torch.linalg.svdvals(y).sum(-1)
    if method == "gram":
        if y.shape[-2] > y.shape[-1]:
            y = y.transpose(-1, -2)
        gram = y @ y.transpose(-1, -2)
        return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum(-1)
    raise ValueError(f"unknown nuclear-norm method {method!r}; choose 'svd' or 'gram'")


PHI: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda n: n.mean(-1),
    "max": lambda n: n.amax(-1),
    "sum": lambda n: n.sum(-1),
    "mean2": lambda n: n.mean(-1) ** 2,
    "max2": lambda n: n.amax(-1) ** 2,
    "sum2": lambda n: n.sum(-1) ** 2,
}


def sfnn_weights(
    f1: torch.Tensor, f2: torch.Tensor, phi: str = "max", method: str = "svd"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3-5 for a batch: (N, C, H, W) x 2 -> W1, W2 of shape (N,).

    Both feature maps go through one softmax and one batched nuclear-norm call.
    """
    _check_pair(f1, f2)
    if phi not in PHI:
        raise ValueError(f"unknown phi {phi!r}; choose from {sorted(PHI)}")
    s = torch.softmax(torch.cat([f1, f2]).float(), dim=1)  # Eq. 3, over channels
    n1, n2 = nuclear_norms(s, method).chunk(2)  # (N, C) each
    p1, p2 = PHI[phi](n1), PHI[phi](n2)
    w1 = p1 / (p1 + p2)
    return w1.to(f1.dtype), (1 - w1).to(f1.dtype)


def sfnn_weights_reference(f1: torch.Tensor, f2: torch.Tensor, phi: str = "max") -> tuple:
    """The same weights with a Python loop over images and channels, one SVD at a time.

    Slow on purpose: it is how the published code computes them, kept to test and benchmark
    :func:`sfnn_weights` against.
    """
    phis = {"mean": (lambda v: sum(v) / len(v)), "max": max, "sum": sum}
    base = phis[phi.rstrip("2")]
    w1s = []
    for i in range(f1.shape[0]):
        vals = []
        for f in (f1[i], f2[i]):
            s = torch.softmax(f.double(), dim=0)
            norms = [torch.linalg.svdvals(s[k]).sum().item() for k in range(s.shape[0])]
            v = base(norms)
            vals.append(v * v if phi.endswith("2") else v)
        w1s.append(vals[0] / (vals[0] + vals[1]))
    w1 = torch.tensor(w1s, dtype=f1.dtype)
    return w1, 1 - w1


def _make_sfnn(phi: str) -> Strategy:
    def sfnn(f1: torch.Tensor, f2: torch.Tensor, weights: Weights = None) -> Result:
        if weights is None:
            w1, w2 = sfnn_weights(f1, f2, phi)
        else:
            _check_pair(f1, f2)
            w1 = w2 = None
        return _weighted(f1, f2, w1, w2, weights)

    sfnn.__name__ = f"sfnn_{phi}"
    sfnn.__doc__ = f"SFNN with phi = {phi}: one global weight per pair (Eq. 3-5)."
    return sfnn


for _phi in PHI:
    register(f"sfnn-{_phi}")(_make_sfnn(_phi))


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a window x window neighbourhood, same size (replicate padding)."""
    if window <= 1:
        return x
    pad = window // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), window, stride=1)


def _ratio(a1: torch.Tensor, a2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w1 = a1 / (a1 + a2).clamp_min(torch.finfo(a1.dtype).tiny)
    w1 = torch.where((a1 + a2) > 0, w1, torch.full_like(w1, 0.5))
    return w1, 1 - w1


@register("fer")
def fer(f1: torch.Tensor, f2: torch.Tensor, weights: Weights = None) -> Result:
    """Feature energy ratio (after Fu et al. 2021, MSRPAN): per pixel, E_j = sum_k (f_j^k)^2,
    W1 = E1 / (E1 + E2). Weights are maps (N, 1, H, W)."""
    _check_pair(f1, f2)
    w1, w2 = _ratio(f1.pow(2).sum(1, keepdim=True), f2.pow(2).sum(1, keepdim=True))
    return _weighted(f1, f2, w1, w2, weights)


@register("fl1n")
def fl1n(f1: torch.Tensor, f2: torch.Tensor, weights: Weights = None, window: int = 3) -> Result:
    """Feature L1-norm (after Li et al. 2022, MSDRA, and DenseFuse): C_j = box mean over a
    ``window`` of sum_k |f_j^k|, W1 = C1 / (C1 + C2). Weights are maps (N, 1, H, W)."""
    _check_pair(f1, f2)
    c1 = _box(f1.abs().sum(1, keepdim=True), window)
    c2 = _box(f2.abs().sum(1, keepdim=True), window)
    return _weighted(f1, f2, *_ratio(c1, c2), weights)


@register("average")
def average(f1: torch.Tensor, f2: torch.Tensor, weights: Weights = None) -> Result:
    """Element-wise mean, W1 = W2 = 1/2."""
    _check_pair(f1, f2)
    half = torch.full((f1.shape[0],), 0.5, dtype=f1.dtype, device=f1.device)
    return _weighted(f1, f2, half, half, weights)


@register("add")
def add(f1: torch.Tensor, f2: torch.Tensor, weights: Weights = None) -> Result:
    """Element-wise sum, W1 = W2 = 1 (weights do not sum to 1)."""
    _check_pair(f1, f2)
    one = torch.ones(f1.shape[0], dtype=f1.dtype, device=f1.device)
    return _weighted(f1, f2, one, one, weights)


@register("max")
def maximum(f1: torch.Tensor, f2: torch.Tensor, weights: Weights = None) -> Result:
    """Element-wise maximum; it has no weights, and refuses an override."""
    _check_pair(f1, f2)
    if weights is not None:
        raise ValueError("the 'max' strategy has no weights to override")
    return torch.maximum(f1, f2), (None, None)


@register("sfnn-spatial")
def sfnn_spatial(
    f1: torch.Tensor,
    f2: torch.Tensor,
    weights: Weights = None,
    window: int = 9,
    temperature: float = 0.1,
) -> Result:
    """This project's extension: SFNN with one weight per pixel instead of one per pair.

    Activity a_j(p) = box mean over ``window`` of the channel mean of |f_j|, divided by the mean
    activity of both maps (so it is scale-free); then a softmax over the two sources at every
    pixel, W_j(p) = exp(a_j / T) / (exp(a_1 / T) + exp(a_2 / T)) with T = ``temperature``.
    T -> infinity gives the average, T -> 0 a per-pixel choice of the more active source.
    Weights are maps (N, 1, H, W) that sum to 1.
    """
    _check_pair(f1, f2)
    a = _box(torch.cat([f1, f2]).abs().mean(1, keepdim=True), window)
    a1, a2 = a.chunk(2)
    scale = (a1.mean((1, 2, 3), keepdim=True) + a2.mean((1, 2, 3), keepdim=True)) / 2
    scale = scale.clamp_min(torch.finfo(a.dtype).tiny)
    w = torch.softmax(torch.cat([a1, a2], dim=1) / (scale * temperature), dim=1)
    return _weighted(f1, f2, w[:, :1], w[:, 1:], weights)


def fuse_features(
    f1: torch.Tensor,
    f2: torch.Tensor,
    strategy: str | Strategy = "sfnn-max",
    weights: Weights = None,
    return_weights: bool = False,
):
    """Fuse two feature maps (N, C, H, W) with a named (or given) strategy.

    Returns the fused features, or ``(fused, (w1, w2))`` with ``return_weights``.
    """
    fn = get_strategy(strategy) if isinstance(strategy, str) else strategy
    fused, w = fn(f1, f2, weights=weights)
    return (fused, w) if return_weights else fused
