"""The fast path (dilran_lite.fast) gives the plain path's results within stated tolerances.

Tolerances (CPU, float32 network):
* fused images: max abs difference <= 1e-5 (images in [0, 1]); weights (the strategy's scalars
  or maps) <= 1e-5, SFNN weights computed on the same features <= 1e-6 (``channels_last``
  changes the convolutions' summation order, hence rounding, by ~1e-6);
* nuclear norms, ``gram64`` against a float64 SVD: relative error <= 1e-6, on the softmax of a
  real-size (64 channels, 256x256) feature map of the shipped paper weights;
* ``gram32``: relative error <= 1e-2 on the norms, <= 5e-3 on the weights;
* ``polar`` (matrix products only; the CUDA default): relative error <= 1e-3 on the norms, never
  above the exact norm, <= 1e-4 on the SFNN weights, on the same real-size maps;
* CUDA (skipped without a GPU; bfloat16 network): fused images <= 3e-2, weights <= 5e-3.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from dilran_lite.data import load_pairs
from dilran_lite.fast import (
    FastFuser,
    conv_floor,
    fast_nuclear_norms,
    fast_sfnn_weights,
    polar_nuclear_norms,
)
from dilran_lite.fusion import PHI, sfnn_weights
from dilran_lite.model import build_model
from dilran_lite.pretrained import pretrained

IMAGE_TOL = 1e-5
WEIGHT_TOL = 1e-6
MAP_TOL = 1e-5


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """One 256x256 test pair (atlas, else the phantom), as (1, 1, H, W) batches."""
    a, b, *_ = load_pairs("mri-ct", "series/test")[0]
    return a[None], b[None]


@pytest.fixture(scope="module")
def paper_softmax(pair) -> torch.Tensor:
    """Softmax over channels of the shipped paper model's features of one image (1, 64, H, W)."""
    model = pretrained("dilran-paper")
    with torch.inference_mode():
        return torch.softmax(model.encode(pair[0]), dim=1)


@pytest.mark.parametrize(
    ("name", "strategy"),
    [
        ("dilran-paper", "sfnn-max"),
        ("dilran-lite", "sfnn-max"),
        ("dilran-lite", "sfnn-mean2"),
        ("dilran-lite", "average"),
        ("dilran-lite", "sfnn-spatial"),
    ],
)
def test_fast_fuse_matches_plain(name: str, strategy: str, pair) -> None:
    model = pretrained(name)
    a, b = (x[..., 80:144, 80:144] for x in pair)  # a 64x64 crop keeps the test fast
    a, b = torch.cat([a, b.flip(-1)]), torch.cat([b, a.flip(-1)])  # a batch of two pairs
    with torch.inference_mode():
        ref, (r1, _) = model.fuse(a, b, strategy, return_weights=True)
    # both memory formats for the cheap lite model; the paper model in its default (channels_last)
    for channels_last in (False, True) if name == "dilran-lite" else (True,):
        fuser = FastFuser(model, channels_last=channels_last)
        out, (w1, _) = fuser.fuse(a, b, strategy, return_weights=True)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert (out - ref).abs().max().item() <= IMAGE_TOL
        assert (torch.as_tensor(w1) - r1).abs().max().item() <= MAP_TOL
    assert next(model.parameters()).is_contiguous()  # the caller's model is left alone


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="torch.compile on a CPU needs a C++ compiler",
)
def test_compiled_fast_path_matches_plain(pair) -> None:
    """``compile=True`` (torch.compile of the encoder and decoder) changes no result."""
    model = pretrained("dilran-lite")
    a, b = (x[..., 96:128, 96:128] for x in pair)
    with torch.inference_mode():
        ref = model.fuse(a, b, "sfnn-max")
    fuser = FastFuser(model, compile=True)
    assert fuser.compiled
    for _ in range(2):  # the first call compiles, the second reuses the graph
        out = fuser(a, b, "sfnn-max")
        assert (out - ref).abs().max().item() <= IMAGE_TOL


def test_fuse_timed_and_conv_floor() -> None:
    model = build_model("lite").eval()
    fuser = FastFuser(model)
    x = torch.rand(2, 1, 32, 32)
    out, times = fuser.fuse_timed(x, x.flip(-1))
    assert out.shape == x.shape
    assert set(times) == {"encode", "strategy", "decode", "total"}
    assert times["total"] >= times["encode"] + times["strategy"]
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    floor = conv_floor(fuser, 2, 32)
    floor()  # runs every convolution, nothing else
    assert floor.__closure__ is not None and n_convs > 0


def test_gram64_matches_svd_on_real_size_maps(paper_softmax: torch.Tensor) -> None:
    s = paper_softmax
    assert s.shape[1:] == (64, 256, 256)
    ref = torch.linalg.svdvals(s.double().view(-1, 256, 256)).sum(-1).view(1, -1)
    fast = fast_nuclear_norms(s, "gram64")
    assert fast.dtype == torch.float64
    assert ((fast - ref).abs() / ref).max().item() <= 1e-6


def test_gram32_within_stated_tolerance(paper_softmax: torch.Tensor) -> None:
    s = paper_softmax
    ref = fast_nuclear_norms(s, "gram64")
    approx = fast_nuclear_norms(s, "gram32")
    assert ((approx.double() - ref).abs() / ref).max().item() <= 1e-2
    f1 = torch.log(s)  # softmax(log s) == s: features whose SFNN maps are these
    f2 = f1[..., :128, :128]  # a second, smaller pair keeps the plain SVD quick
    w64, _ = fast_sfnn_weights(f2, f2.flip(-1).roll(7, dims=1), "max", "gram64")
    plain, _ = sfnn_weights(f2, f2.flip(-1).roll(7, dims=1), "max")
    assert (w64 - plain).abs().max().item() <= WEIGHT_TOL
    n1, n2 = ref, fast_nuclear_norms(torch.softmax(f1.flip(-1).roll(7, dims=1), 1), "gram64")
    a1, a2 = approx, fast_nuclear_norms(torch.softmax(f1.flip(-1).roll(7, dims=1), 1), "gram32")
    for phi in ("max", "mean", "max2"):
        p1, p2, q1, q2 = (PHI[phi](n) for n in (n1, n2, a1.double(), a2.double()))
        assert (p1 / (p1 + p2) - q1 / (q1 + q2)).abs().max().item() <= 5e-3


def test_polar_within_stated_tolerance(paper_softmax: torch.Tensor) -> None:
    s = paper_softmax
    ref = fast_nuclear_norms(s, "gram64")
    approx = fast_nuclear_norms(s, "polar").double()
    assert ((approx - ref).abs() / ref).max().item() <= 1e-3
    assert (approx <= ref * (1 + 1e-6)).all()  # tr(Q^T X) <= ||X||_* for any orthogonal Q
    other = torch.softmax(torch.log(s).flip(-1).roll(7, dims=1), 1)
    w_ref, _ = fast_sfnn_weights(torch.log(s), torch.log(other), "max", "gram64")
    w_pol, _ = fast_sfnn_weights(torch.log(s), torch.log(other), "max", "polar")
    assert (w_pol.double() - w_ref).abs().max().item() <= 1e-4


def test_polar_known_values() -> None:
    """Known nuclear norms: diagonal, rotated, rank-deficient and all-zero matrices."""
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    d = torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5] + [0.0] * 12))
    x = torch.stack([d, q @ d @ q.T, torch.zeros(16, 16), torch.ones(16, 16)])
    norms = polar_nuclear_norms(x, iters=(6, 20))
    assert torch.allclose(norms, torch.tensor([7.5, 7.5, 0.0, 16.0]), rtol=1e-5, atol=1e-6)
    tall = torch.randn(2, 24, 10, generator=torch.Generator().manual_seed(1))
    ref = torch.linalg.svdvals(tall.double()).sum(-1)
    assert torch.allclose(polar_nuclear_norms(tall, iters=(6, 20)).double(), ref, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("nuclear", [None, "gram32", "polar"])
def test_cuda_bf16_fast_path_close_to_plain(pair, nuclear) -> None:
    """On CUDA (bf16 autocast, channels_last; default: polar): images within 3e-2, weights 5e-3."""
    model = pretrained("dilran-paper")
    a, b = pair
    with torch.inference_mode():
        ref, (r1, _) = model.fuse(a, b, return_weights=True)
    fuser = FastFuser(model, device="cuda", nuclear=nuclear)
    out, (w1, _) = fuser.fuse(a, b, return_weights=True)
    assert (out.cpu() - ref).abs().max().item() <= 3e-2
    assert (w1.cpu() - r1).abs().max().item() <= 5e-3


def test_large_batches_are_encoded_in_chunks(monkeypatch) -> None:
    """A batch whose activations would pass MAX_TENSOR_ELEMENTS is encoded in chunks, with the
    same features as one call."""
    import dilran_lite.fast as fast

    fuser = FastFuser(build_model("lite"), device="cpu")
    x = fuser.prepare(torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    whole = fuser.encode(x)
    calls = []
    encoder = fuser._encoder
    fuser._encoder = lambda part: calls.append(len(part)) or encoder(part)
    monkeypatch.setattr(fast, "MAX_TENSOR_ELEMENTS", 2 * 3 * fuser.config.width * 16 * 16)
    chunked = fuser.encode(x)
    assert calls == [2, 2, 1]
    assert torch.allclose(chunked, whole, atol=1e-6)


def test_nuclear_norm_errors() -> None:
    with pytest.raises(ValueError, match="nuclear-norm method"):
        fast_nuclear_norms(torch.rand(1, 2, 8, 8), "qr")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fast_nuclear_norms(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="phi"):
        fast_sfnn_weights(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8), "median")
    with pytest.raises(ValueError, match="nuclear"):
        FastFuser(build_model("lite"), nuclear="qr")
