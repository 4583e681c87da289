"""The fusion explorer of chapter 7: its callback (update), the feature cache and the widget."""

from __future__ import annotations

import pytest
import torch

from dilran_lite.explorer import (
    ExplorerResult,
    FusionExplorer,
    metrics_table_html,
    result_figure,
    w1_grid,
)
from dilran_lite.fusion import sfnn_weights
from dilran_lite.model import build_model
from dilran_lite.phantom import PhantomDataset

SIZE = 64


class CountingModel(torch.nn.Module):
    """A DILRAN that counts the calls to encode."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.encode_calls = 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        return self.inner.encode(x)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(f)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model("lite").eval()
    # An untrained decoder may clamp everything to 0; shift its output into [0, 1] so that
    # changes of W1 show in the clamped image.
    last = [mod for mod in m.decoder.modules() if isinstance(mod, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.add_(0.5)
    return m


@pytest.fixture(scope="module")
def dataset() -> PhantomDataset:
    return PhantomDataset(n=2, size=SIZE, seed=3)


@pytest.fixture()
def explorer(model, dataset) -> FusionExplorer:
    return FusionExplorer(CountingModel(model), dataset, metrics=("PSNR", "SSIM", "EN"))


def test_update_returns_image_weights_metrics(explorer):
    res = explorer.update(0, "sfnn-max")
    assert isinstance(res, ExplorerResult)
    fused, (w1, w2), metrics = res
    assert fused.shape == (1, SIZE, SIZE)
    assert 0 <= float(fused.min()) and float(fused.max()) <= 1
    assert w1.shape == (1,) and torch.allclose(w1 + w2, torch.ones(1))
    assert set(metrics) == {"PSNR", "SSIM", "EN"}


def test_changing_w1_changes_image_and_metrics(explorer):
    r1 = explorer.update(0, "sfnn-max", w1=0.1)
    r2 = explorer.update(0, "sfnn-max", w1=0.9)
    assert not torch.allclose(r1.fused, r2.fused)
    assert r1.metrics != r2.metrics
    assert float(r1.weights[0]) == pytest.approx(0.1) and float(r2.weights[1]) == pytest.approx(0.1)


def test_w1_extremes_are_the_autoencoded_sources(explorer, model, dataset):
    a, b, _ = dataset[0]
    with torch.no_grad():
        dec_a = model.decode(model.encode(a[None])).clamp(0, 1)[0]
        dec_b = model.decode(model.encode(b[None])).clamp(0, 1)[0]
    assert torch.allclose(explorer.update(0, "sfnn-max", w1=1.0).fused, dec_a, atol=1e-5)
    assert torch.allclose(explorer.update(0, "fer", w1=0.0).fused, dec_b, atol=1e-5)


@pytest.mark.parametrize("strategy", ["sfnn-max", "sfnn-mean2"])
def test_auto_uses_the_strategy_weights(explorer, dataset, strategy):
    f1, f2 = explorer.features(0)
    w1, w2 = sfnn_weights(f1, f2, phi=strategy.split("-")[1])
    res = explorer.update(0, strategy)
    assert torch.allclose(res.weights[0], w1) and torch.allclose(res.weights[1], w2)
    manual = explorer.update(0, strategy, w1=float(w1))
    assert torch.allclose(res.fused, manual.fused, atol=1e-6)


def test_map_strategies_and_max(explorer):
    w1, _ = explorer.update(0, "sfnn-spatial").weights
    assert w1.shape == (1, 1, SIZE, SIZE)
    assert explorer.update(0, "max").weights == (None, None)
    # max has no weights: a manual W1 turns it into the weighted sum
    assert torch.allclose(
        explorer.update(0, "max", w1=0.3).fused, explorer.update(0, "average", w1=0.3).fused
    )
    with pytest.raises(ValueError, match="w1 must lie"):
        explorer.update(0, "average", w1=1.5)
    with pytest.raises(ValueError, match="unknown strategy"):
        explorer.update(0, "nope")


def test_features_are_cached_per_pair(explorer):
    m = explorer.model
    for strategy in ("sfnn-max", "fer", "average"):
        for w in (None, 0.2, 0.8):
            explorer.update(0, strategy, w1=w)
    assert m.encode_calls == 1
    explorer.update(1, "sfnn-max")
    explorer.update(1, "fl1n", w1=0.4)
    explorer.update(0, "add")
    assert m.encode_calls == 2


def test_w1_grid(model, dataset):
    a, b, _ = dataset[0]
    images = w1_grid(model, a, b, [0.0, 0.5, 1.0])
    assert len(images) == 3 and all(im.shape == (1, SIZE, SIZE) for im in images)
    ex = FusionExplorer(model, dataset, metrics=())
    assert torch.allclose(images[1], ex.update(0, "average").fused, atol=1e-6)
    assert not torch.allclose(images[0], images[2])


def test_figure_and_table():
    a = torch.rand(1, 16, 16)
    fig = result_figure(a, a, a, (torch.tensor([0.4]), torch.tensor([0.6])))
    assert len(fig.axes) == 5  # four panels and a colour bar
    table = metrics_table_html({"PSNR": 12.3456}, (torch.tensor([0.25]), None))
    assert "12.346" in table and "W1 = 0.250" in table


def test_widget_builds_and_slider_redraws(explorer):
    widgets = pytest.importorskip("ipywidgets")
    box = explorer.widget(0, "sfnn-max")
    assert isinstance(box, widgets.VBox)
    c = explorer.controls
    assert isinstance(c["w1"], widgets.FloatSlider) and isinstance(c["auto"], widgets.Checkbox)
    assert isinstance(c["pair"], widgets.Dropdown) and isinstance(c["strategy"], widgets.Dropdown)
    assert isinstance(c["image"], widgets.Image) and c["image"].value[:4] == b"\x89PNG"
    assert "<table" in c["table"].value
    assert explorer.renders == 1
    # auto: the slider shows the strategy's W1 and is disabled
    assert c["w1"].disabled
    assert c["w1"].value == pytest.approx(float(explorer.last_result.weights[0]), abs=0.01)

    c["auto"].value = False
    assert not c["w1"].disabled and explorer.renders == 2
    before = explorer.last_result
    c["w1"].value = 0.05 if c["w1"].value > 0.5 else 0.95
    assert explorer.renders == 3
    assert float(explorer.last_result.weights[0]) == pytest.approx(c["w1"].value)
    assert not torch.allclose(before.fused, explorer.last_result.fused)
    assert before.metrics != explorer.last_result.metrics

    c["strategy"].value = "fer"
    c["pair"].value = 1
    assert explorer.renders == 5
    assert explorer.model.encode_calls == 2
