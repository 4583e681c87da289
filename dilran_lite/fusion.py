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

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Union

import torch
import torch.nn.functional as F

__all__ = [
    "STRATEGIES",
    "LOCAL_STRATEGIES",
    "PHI",
    "register",
    "get_strategy",
    "fuse_features",
    "NUCLEAR_METHODS",
    "nuclear_norms",
    "softmax_nuclear_norms",
    "polar_nuclear_norms",
    "single_threaded",
    "sfnn_weights",
    "sfnn_weights_reference",
    "run_tasks",
    "matrix_norms",
    "log_normaliser",
]

Weights = Union[None, float, tuple, torch.Tensor]
Result = tuple[torch.Tensor, tuple]
Strategy = Callable[..., Result]

STRATEGIES: dict[str, Strategy] = {}

#: strategies whose output at a pixel depends only on a small neighbourhood (at most 4 pixels
#: away): they can run tile by tile (:func:`dilran_lite.inference.fuse_images` on large images)
LOCAL_STRATEGIES = frozenset({"fer", "fl1n", "average", "add", "max"})


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


#: ``gram64``: eigenvalues of the smaller Gram matrix X X^T in float64 (exact to ~1e-8 against an
#: SVD; the CPU default); ``gram32``: the same in float32 (~2e-3 relative on softmax maps: the
#: Gram matrix squares the condition number); ``gram``: the Gram route in the input's own dtype
#: (float32 at least); ``svd``: ``torch.linalg.svdvals`` in the input's dtype (float32 at least);
#: ``polar``: :func:`polar_nuclear_norms`, matrix products only (the CUDA default: CUDA's
#: eigenvalue solvers take one small matrix at a time).
NUCLEAR_METHODS = ("gram64", "gram32", "gram", "svd", "polar")

#: iterations of :func:`polar_nuclear_norms`: (quintic, cubic). Measured against ``gram64`` on
#: the paper preset's softmax maps of four atlas test pairs (512 maps of 256x256): (6, 10) is
#: within 1.0e-4 relative on the norms, (6, 14) within 1.1e-5, (4, 10) within 2.3e-3.
POLAR_ITERS = (6, 10)

#: Newton-Schulz quintic that pushes small singular values up ~3.4x per step (it does not
#: converge to 1 itself: the cubic steps after it do)
_QUINTIC = (3.4445, -4.7750, 2.0315)

#: bytes of channel maps one CPU worker takes at a time (bounds the memory of the norms)
_TASK_BYTES = 32 * 2**20

_POOL: ThreadPoolExecutor | None = None


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers != workers:  # noqa: SLF001 (the pool's own size)
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dilran-lapack")
    return _POOL


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the body with one intra-op thread, then restore the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_tasks(tasks: list[Callable[[], torch.Tensor]], workers: int) -> list[torch.Tensor]:
    """Run ``tasks`` on ``workers`` threads of one core each (LAPACK single-threaded).

    One 256x256 eigenvalue problem is too small for two OpenMP threads, and multi-threaded
    LAPACK slows down 10x or more when other processes share the cores; side-by-side
    single-threaded calls do not (PyTorch releases the GIL inside its operators).
    """
    if workers <= 1 or len(tasks) < 2:
        with single_threaded():
            return [t() for t in tasks]

    def work(task: Callable[[], torch.Tensor]) -> torch.Tensor:
        torch.set_num_threads(1)  # this worker thread's own OpenMP team
        return task()

    with single_threaded():
        return list(_pool(workers).map(work, tasks))


def polar_nuclear_norms(x: torch.Tensor, iters: tuple[int, int] = POLAR_ITERS) -> torch.Tensor:
    """Nuclear norms of a batch of matrices (B, H, W) -> (B,) by matrix products alone.

    ``||X||_* = max over orthogonal Q of tr(Q^T X)``, reached at the polar factor Q = U V^T of
    X = U S V^T. Newton-Schulz steps ``Y <- p(Y Y^T) Y`` on ``Y = X / ||X||_F`` (singular values
    in (0, 1]) drive every singular value towards 1 and keep the singular vectors, so Y tends to
    Q: first ``iters[0]`` quintic steps (small values grow ~3.4x per step), then ``iters[1]``
    cubic ones ``(3 Y - Y Y^T Y) / 2``, which converge to 1. The result ``tr(Y^T X)`` is
    ``sum_i s_i f(s_i)`` with ``f <= 1``: never above the true norm, and short of it only by the
    smallest singular values. Stable in float32 (no inverse is formed).
    """
    y0 = x.float()
    scale = torch.linalg.matrix_norm(y0).clamp_min(torch.finfo(torch.float32).tiny)
    y = y0 / scale[:, None, None]
    if y.shape[-2] > y.shape[-1]:  # multiply by the smaller Gram matrix
        y, y0 = y.transpose(-1, -2), y0.transpose(-1, -2)
    a, b, c = _QUINTIC
    for _ in range(iters[0]):
        g = y @ y.transpose(-1, -2)
        y = a * y + (b * g + c * (g @ g)) @ y
    for _ in range(iters[1]):
        y = 1.5 * y - 0.5 * ((y @ y.transpose(-1, -2)) @ y)
    return (y * y0).sum((-1, -2))


def _default_method(x: torch.Tensor) -> str:
    return "polar" if x.device.type == "cuda" else "gram64"


def matrix_norms(m: torch.Tensor, method: str) -> torch.Tensor:
    """Nuclear norms of a batch of matrices (B, H, W) -> (B,) with ``method``."""
    if method == "polar":
        return polar_nuclear_norms(m)
    if method == "gram64":
        m = m.double()
    elif method == "gram32":
        m = m.float()
    elif m.dtype != torch.float64:
        m = m.float()
    if method == "svd":
        return torch.linalg.svdvals(m).sum(-1)
    if m.shape[-2] > m.shape[-1]:
        m = m.transpose(-1, -2)
    gram = m @ m.transpose(-1, -2)
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum(-1)


def _check_method(method: str) -> None:
    if method not in NUCLEAR_METHODS:
        raise ValueError(f"unknown nuclear-norm method {method!r}; choose from {NUCLEAR_METHODS}")


def _chunks(c: int, per_map: int, workers: int) -> list[tuple[int, int]]:
    """Channel ranges of at most ``_TASK_BYTES`` each, and at least ``workers`` of them."""
    size = max(1, min(_TASK_BYTES // max(per_map, 1), -(-c // max(workers, 1))))
    return [(i, min(i + size, c)) for i in range(0, c, size)]


def nuclear_norms(
    x: torch.Tensor, method: str | None = None, workers: int | None = None
) -> torch.Tensor:
    """Nuclear norm of every channel map: (N, C, H, W) -> (N, C).

    ``method`` is one of :data:`NUCLEAR_METHODS` (default ``gram64`` on a CPU, ``polar`` on
    CUDA). On a CPU the maps are split over ``workers`` single-threaded threads (default:
    ``torch.get_num_threads()``), in tasks of at most 32 MiB of float64 maps. The result is in
    float64 for float64 input, float32 otherwise.
    """
    out = raw_nuclear_norms(x, method, workers)
    return out.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def raw_nuclear_norms(
    x: torch.Tensor, method: str | None = None, workers: int | None = None
) -> torch.Tensor:
    """:func:`nuclear_norms` in the method's own precision (float64 for ``gram64``)."""
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(x.shape)}")
    method = method or _default_method(x)
    _check_method(method)
    n, c, h, w = x.shape
    if x.device.type != "cpu":
        return matrix_norms(x.reshape(n * c, h, w), method).view(n, c)
    workers = workers or torch.get_num_threads()
    tasks = [
        (lambda i=i, lo=lo, hi=hi: matrix_norms(x[i, lo:hi], method))
        for i in range(n)
        for lo, hi in _chunks(c, 8 * h * w, workers)
    ]
    return torch.cat(run_tasks(tasks, workers)).view(n, c)


def log_normaliser(f: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """log sum_k exp(f_k) over channels, (N, C, H, W) -> (N, 1, H, W) float32, in row blocks
    (no full-size temporary)."""
    out = torch.empty((f.shape[0], 1, *f.shape[2:]), dtype=torch.float32, device=f.device)
    for r in range(0, f.shape[2], rows):
        out[:, :, r : r + rows] = torch.logsumexp(f[:, :, r : r + rows].float(), 1, keepdim=True)
    return out


def softmax_nuclear_norms(
    f: torch.Tensor, method: str | None = None, workers: int | None = None
) -> torch.Tensor:
    """Eq. 3-4: nuclear norms of the channel softmax of ``f``, (N, C, H, W) -> (N, C).

    Equal to ``nuclear_norms(torch.softmax(f, 1))`` but, on a CPU, the softmax is never held
    whole: each worker forms its own channel maps ``exp(f_k - logsumexp(f))`` (at most 32 MiB at
    a time), so the memory beyond ``f`` is one (N, 1, H, W) map plus the workers' tasks.
    """
    if f.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(f.shape)}")
    method = method or _default_method(f)
    _check_method(method)
    if f.device.type != "cpu":
        return nuclear_norms(torch.softmax(f.float(), dim=1), method)
    n, c, h, w = f.shape
    lse = log_normaliser(f)
    workers = workers or torch.get_num_threads()

    def task(i: int, lo: int, hi: int) -> torch.Tensor:
        dtype = torch.float64 if method == "gram64" else torch.float32
        maps = f[i, lo:hi].to(dtype, copy=True)  # a copy: f itself is left as it is
        return matrix_norms(maps.sub_(lse[i]).exp_(), method)

    tasks = [
        (lambda i=i, lo=lo, hi=hi: task(i, lo, hi))
        for i in range(n)
        for lo, hi in _chunks(c, 8 * h * w, workers)
    ]
    return torch.cat(run_tasks(tasks, workers)).view(n, c)


PHI: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda n: n.mean(-1),
    "max": lambda n: n.amax(-1),
    "sum": lambda n: n.sum(-1),
    "mean2": lambda n: n.mean(-1) ** 2,
    "max2": lambda n: n.amax(-1) ** 2,
    "sum2": lambda n: n.sum(-1) ** 2,
}


def sfnn_weights(
    f1: torch.Tensor,
    f2: torch.Tensor,
    phi: str = "max",
    method: str | None = None,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3-5 for a batch: (N, C, H, W) x 2 -> W1, W2 of shape (N,) in the features' dtype.

    The nuclear norms come from :func:`softmax_nuclear_norms` (``method``, ``workers``: see
    :func:`nuclear_norms`); this is the one SFNN path of the package.
    """
    _check_pair(f1, f2)
    if phi not in PHI:
        raise ValueError(f"unknown phi {phi!r}; choose from {sorted(PHI)}")
    n1 = softmax_nuclear_norms(f1, method, workers)
    n2 = softmax_nuclear_norms(f2, method, workers)
    p1, p2 = PHI[phi](n1), PHI[phi](n2)
    w1 = p1 / (p1 + p2)
    dtype = f1.dtype if f1.dtype.is_floating_point else torch.float32
    return w1.to(dtype), (1 - w1).to(dtype)


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
