"""Eq. 6-9: known values, zero for identical images, growth with the difference, VGG loading."""

import pytest
import torch
from torch import nn

from dilran_lite.losses import (
    VGG_LAYERS,
    FusionLoss,
    PerceptualLoss,
    VGGWeightsUnavailable,
    gradient_term,
    image_gradients,
    load_vgg16_features,
    mse_term,
)


class TinyBackbone(nn.Module):
    """A fixed random conv standing in for VGG16 (3 -> 8 channels, half resolution)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


@pytest.fixture()
def loss():
    return FusionLoss(perceptual=PerceptualLoss(backbone=TinyBackbone()))


def test_zero_for_identical_images(loss):
    x = torch.rand(2, 1, 32, 32)
    terms = loss.terms(x, x)
    for name, value in terms.items():
        assert value.item() == pytest.approx(0.0, abs=1e-7), name


def test_grows_with_the_difference(loss):
    torch.manual_seed(1)
    x = torch.rand(2, 1, 32, 32)
    noise = torch.randn_like(x)
    values = [loss(x + s * noise, x).item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert values == sorted(values) and values[0] > 0


def test_mse_is_eq6_over_pixels_and_sums_targets():
    a = torch.zeros(1, 1, 4, 4)
    b = torch.full((1, 1, 4, 4), 0.5)
    assert mse_term(a, b).item() == pytest.approx(0.25)
    assert mse_term(a, [b, b]).item() == pytest.approx(0.5)


def test_sobel_and_difference_gradients_of_a_ramp():
    ramp = torch.arange(8.0).repeat(8, 1)[None, None]  # +1 per column
    gx, gy = image_gradients(ramp, "sobel")
    assert torch.allclose(gx[..., 1:-1, 1:-1], torch.full((6, 6), 8.0))  # Sobel gain 8
    assert torch.allclose(gy, torch.zeros_like(gy))
    dx, dy = image_gradients(ramp, "diff")
    assert torch.allclose(dx[..., :-1], torch.ones(8, 7)) and dy.abs().sum() == 0
    # a constant shift changes the MSE but not the gradient term
    assert gradient_term(ramp + 3, ramp).item() == pytest.approx(0.0)
    assert gradient_term(ramp.transpose(-1, -2), ramp).item() > 0
    with pytest.raises(ValueError, match="operator"):
        image_gradients(ramp, "laplace")


def test_total_is_eq9(loss):
    torch.manual_seed(2)
    out, target = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    t = loss.terms(out, target)
    assert t["total"].item() == pytest.approx(
        (t["mse"] + 0.2 * t["gradient"] + 0.2 * t["perceptual"]).item(), rel=1e-6
    )


def test_perceptual_input_is_repeated_and_imagenet_normalised():
    seen = {}

    class Spy(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x

    p = PerceptualLoss(backbone=Spy())
    p.features(torch.ones(1, 1, 4, 4))
    x = seen["x"]
    assert x.shape == (1, 3, 4, 4)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, :, 0, 0], expected)


def test_lambda2_zero_loads_no_vgg():
    loss = FusionLoss(lambda2=0.0, vgg_weights="/nonexistent/vgg.pth")
    assert loss.perceptual is None
    x = torch.rand(1, 1, 16, 16)
    assert loss.terms(x, x)["perceptual"].item() == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        FusionLoss(lambda1=-1, lambda2=0)


def _features_state(cut: int) -> dict:
    from torchvision.models import vgg16

    torch.manual_seed(0)
    feats = vgg16().features[:cut]
    return {f"features.{k}": v for k, v in feats.state_dict().items()}


def test_vgg_loads_from_a_file_url_and_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    state = _features_state(VGG_LAYERS["relu3_3"])
    path = tmp_path / "vgg16-features.pth"
    torch.save(state, path)
    for source in (path, path.as_uri()):
        feats = load_vgg16_features(source)
        assert not any(p.requires_grad for p in feats.parameters())
        assert torch.equal(feats[0].weight, state["features.0.weight"])
        assert feats(torch.rand(1, 3, 32, 32)).shape == (1, 256, 8, 8)
    # the URL path went through torch hub's cache
    assert list((tmp_path / "hub").rglob("vgg16-features.pth"))


def test_vgg_unavailable_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(VGGWeightsUnavailable, match="lambda2 = 0"):
        load_vgg16_features("http://127.0.0.1:9/vgg16-397923af.pth")
    with pytest.raises(VGGWeightsUnavailable, match="vgg_weights=PATH"):
        load_vgg16_features(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(VGGWeightsUnavailable, match="not a VGG16 state dict"):
        load_vgg16_features(bad)
