"""Fusion strategies: weights, symmetry, identity, overrides, and the batched SFNN vs a loop."""

import pytest
import torch

from dilran_lite.fusion import (
    PHI,
    STRATEGIES,
    fuse_features,
    get_strategy,
    nuclear_norms,
    sfnn_weights,
    sfnn_weights_reference,
)

WEIGHTED = [s for s in STRATEGIES if s not in ("max", "add")]


@pytest.fixture(scope="module")
def feats():
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(3, 8, 20, 24, generator=g)
    f2 = 2 * torch.randn(3, 8, 20, 24, generator=g) + 0.5
    return f1, f2


def test_registry_names():
    expected = {f"sfnn-{p}" for p in ("mean", "max", "sum", "mean2", "max2", "sum2")}
    expected |= {"fer", "fl1n", "average", "max", "add", "sfnn-spatial"}
    assert set(STRATEGIES) == expected
    with pytest.raises(ValueError, match="unknown fusion strategy 'nope'"):
        get_strategy("nope")


@pytest.mark.parametrize("name", WEIGHTED)
def test_weights_sum_to_one_and_fuse_is_the_weighted_sum(feats, name):
    f1, f2 = feats
    fused, (w1, w2) = fuse_features(f1, f2, name, return_weights=True)
    assert torch.allclose(w1 + w2, torch.ones_like(w1))
    assert ((w1 >= 0) & (w1 <= 1)).all()
    w1b = w1.view(-1, 1, 1, 1) if w1.ndim == 1 else w1
    w2b = w2.view(-1, 1, 1, 1) if w2.ndim == 1 else w2
    assert torch.allclose(fused, w1b * f1 + w2b * f2, atol=1e-6)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_swapping_inputs_swaps_weights(feats, name):
    f1, f2 = feats
    fa, (a1, a2) = fuse_features(f1, f2, name, return_weights=True)
    fb, (b1, b2) = fuse_features(f2, f1, name, return_weights=True)
    assert torch.allclose(fa, fb, atol=1e-5)
    if a1 is not None:
        assert torch.allclose(a1, b2, atol=1e-6) and torch.allclose(a2, b1, atol=1e-6)


@pytest.mark.parametrize("name", [s for s in STRATEGIES if s != "add"])
def test_fusing_features_with_themselves_gives_them_back(feats, name):
    f1, _ = feats
    assert torch.allclose(fuse_features(f1, f1, name), f1, atol=1e-6)


def test_add_is_the_sum(feats):
    f1, f2 = feats
    assert torch.allclose(fuse_features(f1, f2, "add"), f1 + f2)


def test_sfnn_weights_are_one_scalar_per_pair(feats):
    f1, f2 = feats
    w1, w2 = sfnn_weights(f1, f2, "max")
    assert w1.shape == (3,) and w2.shape == (3,)
    # f2 has the larger spread, so its softmax is peakier... the weights must differ from 1/2
    assert not torch.allclose(w1, torch.full_like(w1, 0.5))


def test_mean_and_sum_give_identical_weights(feats):
    f1, f2 = feats
    for a, b in (("mean", "sum"), ("mean2", "sum2")):
        wa, _ = sfnn_weights(f1, f2, a)
        wb, _ = sfnn_weights(f1, f2, b)
        assert torch.allclose(wa, wb, atol=1e-6)
    wmax, _ = sfnn_weights(f1, f2, "max")
    wmax2, _ = sfnn_weights(f1, f2, "max2")
    # squaring pushes the weights away from 1/2
    assert ((wmax2 - 0.5).abs() >= (wmax - 0.5).abs() - 1e-7).all()


@pytest.mark.parametrize("phi", list(PHI))
def test_batched_sfnn_matches_the_per_channel_loop(feats, phi):
    f1, f2 = feats
    w1, w2 = sfnn_weights(f1, f2, phi)
    r1, r2 = sfnn_weights_reference(f1, f2, phi)
    assert torch.allclose(w1, r1, atol=1e-5) and torch.allclose(w2, r2, atol=1e-5)


def test_nuclear_norm_known_values_and_gram_path():
    eye = torch.eye(5).expand(1, 2, 5, 5)
    assert torch.allclose(nuclear_norms(eye), torch.full((1, 2), 5.0))
    rank1 = torch.outer(torch.arange(1.0, 5), torch.arange(1.0, 4))[None, None]  # |u||v|
    assert torch.allclose(nuclear_norms(rank1), torch.tensor([[30**0.5 * 14**0.5]]))
    x = torch.rand(2, 3, 17, 29, dtype=torch.float64)
    assert torch.allclose(nuclear_norms(x, "gram"), nuclear_norms(x, "svd"), rtol=1e-8)
    x32 = torch.softmax(torch.randn(2, 16, 64, 64), dim=1)
    assert torch.allclose(nuclear_norms(x32, "gram"), nuclear_norms(x32, "svd"), rtol=1e-4)
    with pytest.raises(ValueError, match="method"):
        nuclear_norms(x, "qr")


def test_weight_override(feats):
    f1, f2 = feats
    assert torch.allclose(fuse_features(f1, f2, "sfnn-max", weights=1.0), f1)
    assert torch.allclose(fuse_features(f1, f2, "sfnn-max", weights=0.0), f2)
    out, (w1, w2) = fuse_features(f1, f2, "fer", weights=(0.25, 0.75), return_weights=True)
    assert torch.allclose(out, 0.25 * f1 + 0.75 * f2)
    per_image = torch.tensor([0.0, 0.5, 1.0])
    out = fuse_features(f1, f2, "average", weights=per_image)
    assert torch.allclose(out[0], f2[0]) and torch.allclose(out[2], f1[2])
    with pytest.raises(ValueError, match="no weights"):
        fuse_features(f1, f2, "max", weights=0.5)


def test_spatial_variant_has_a_weight_map_that_follows_activity():
    f1 = torch.zeros(1, 4, 32, 32)
    f2 = torch.zeros(1, 4, 32, 32)
    f1[..., :, :16] = 1.0  # f1 active on the left
    f2[..., :, 16:] = 1.0  # f2 on the right
    _, (w1, w2) = fuse_features(f1, f2, "sfnn-spatial", return_weights=True)
    assert w1.shape == (1, 1, 32, 32)
    assert w1[..., :, :8].min() > 0.99 and w1[..., :, 24:].max() < 0.01


def test_mismatched_features_are_refused(feats):
    f1, _ = feats
    with pytest.raises(ValueError, match="one shape"):
        fuse_features(f1, f1[:, :4], "sfnn-max")


@pytest.mark.parametrize("method", ["gram64", "gram32", "svd", "gram"])
def test_softmax_nuclear_norms_match_the_plain_softmax_and_leave_features(method):
    from dilran_lite.fusion import softmax_nuclear_norms

    torch.manual_seed(3)
    f = torch.randn(2, 6, 20, 24)
    keep = f.clone()
    ref = torch.linalg.svdvals(torch.softmax(f.double(), 1)).sum(-1)
    got = softmax_nuclear_norms(f, method, workers=2).double()
    assert torch.equal(f, keep)
    assert torch.allclose(got, ref, rtol=1e-6 if method == "gram64" else 1e-4)  # softmax in float32
