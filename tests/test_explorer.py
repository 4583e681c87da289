"""The fusion explorer of chapter 7: its callback (update), the feature cache and the widget."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re

import numpy as np
import pytest
import torch

from dilran_lite import fusion
from dilran_lite.color import rgb_to_ycbcr, ycbcr_to_rgb
from dilran_lite.explorer import (
    VIEWS,
    ExplorerResult,
    FusionExplorer,
    image_bytes,
    metrics_table_html,
    result_figure,
    static_explorer_html,
    w1_grid,
)
from dilran_lite.fusion import STRATEGIES, fuse_features, sfnn_weights
from dilran_lite.model import build_model
from dilran_lite.phantom import PhantomDataset
from dilran_lite.pretrained import pretrained

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
    for k in ("first", "second", "fused", "view_image"):
        assert isinstance(c[k], widgets.Image) and c[k].value[:4] == b"\x89PNG"
    assert "<table" in c["table"].value and "W2 = " in c["table"].value
    assert explorer.renders == 1
    # auto: the slider shows the strategy's W1 and is disabled; T only for sfnn-spatial
    assert c["w1"].disabled and c["temperature"].disabled
    assert c["w1"].value == pytest.approx(float(explorer.last_result.weights[0]), abs=0.01)
    first_png = c["first"].value

    c["auto"].value = False
    assert not c["w1"].disabled and explorer.renders == 2
    before, fused_png = explorer.last_result, c["fused"].value
    c["w1"].value = 0.05 if c["w1"].value > 0.5 else 0.95
    assert explorer.renders == 3
    assert float(explorer.last_result.weights[0]) == pytest.approx(c["w1"].value)
    assert not torch.allclose(before.fused, explorer.last_result.fused)
    assert before.metrics != explorer.last_result.metrics
    assert c["fused"].value != fused_png and c["first"].value is first_png  # updated in place

    c["auto"].value = True
    c["strategy"].value = "sfnn-spatial"
    assert not c["temperature"].disabled
    fused_png = c["fused"].value
    c["temperature"].value = 1.0
    assert c["fused"].value != fused_png
    for view in VIEWS:
        c["view"].value = view
    c["zoom"].value = 2
    c["pair"].value = 1
    assert explorer.model.encode_calls == 2
    assert c["first"].value != first_png


def test_split_decode_is_exact(model, dataset):
    """The cached first convolution: the same image as model.decode(w1 f1 + w2 f2)."""
    ex = FusionExplorer(model, dataset, metrics=())
    assert ex._split is not None
    f1, f2 = ex.features(0)
    for w1, strategy in ((0.0, "average"), (0.37, "sfnn-max"), (1.0, "fer")):
        with torch.no_grad():
            ref = model.decode(w1 * f1 + (1 - w1) * f2).clamp(0, 1)[0]
        assert torch.allclose(ex.update(0, strategy, w1=w1).fused, ref, atol=1e-5)
    # add: W1 = W2 = 1, the bias of the first convolution counted once
    with torch.no_grad():
        ref = model.decode(f1 + f2).clamp(0, 1)[0]
    assert torch.allclose(ex.update(0, "add").fused, ref, atol=1e-5)


def test_weights_and_images_are_cached_per_pair_and_strategy(model, dataset, monkeypatch):
    calls = []
    real = fusion.sfnn_weights

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fusion, "sfnn_weights", counting)
    ex = FusionExplorer(model, dataset, metrics=("EN",))
    for _ in range(3):
        ex.update(0, "sfnn-max")
        ex.update(0, "fer")
        ex.update(0, "sfnn-max2")
    assert len(calls) == 2  # one per (pair, SFNN strategy)
    decodes = ex.decodes
    for w in (0.2, 0.4, 0.2, 0.4):
        ex.update(0, "sfnn-max", w1=w)
    assert ex.decodes == decodes + 2  # each W1 decoded once
    ex.update(1, "sfnn-max")
    assert len(calls) == 3


def test_spatial_temperature(explorer):
    f1, f2 = explorer.features(0)
    for t in (0.03, 1.0):
        w_ref, _ = STRATEGIES["sfnn-spatial"](f1, f2, temperature=t)[1]
        w1, w2 = explorer.update(0, "sfnn-spatial", temperature=t).weights
        assert torch.allclose(w1, w_ref) and torch.allclose(w1 + w2, torch.ones_like(w1))
    sharp = explorer.update(0, "sfnn-spatial", temperature=0.01).weights[0]
    soft = explorer.update(0, "sfnn-spatial", temperature=10.0).weights[0]
    assert (sharp - 0.5).abs().mean() > (soft - 0.5).abs().mean()
    default = explorer.update(0, "sfnn-spatial").weights[0]
    assert torch.allclose(default, explorer.update(0, "sfnn-spatial", temperature=0.1).weights[0])


def test_map_image_survives_cache_eviction(explorer):
    ref = explorer.update(0, "fl1n").fused
    explorer._fused.clear()
    assert torch.allclose(explorer.update(0, "fl1n").fused, ref, atol=1e-6)
    ref = explorer.update(0, "max").fused
    explorer._fused.clear()
    assert torch.allclose(explorer.update(0, "max").fused, ref, atol=1e-6)


def test_colour_pairs_fuse_the_luma(model, dataset):
    pet = PhantomDataset(n=1, size=SIZE, seed=3, modality="PET")
    ex = FusionExplorer(model, dataset, indices=[0], metrics=("EN",)).add_pairs(pet)
    assert len(ex) == 2 and ex.label(1).startswith("MRI-PET: ")
    a, rgb, _ = pet[0]
    res = ex.update(1, "sfnn-max")
    assert res.fused.shape == (3, SIZE, SIZE)
    y = rgb_to_ycbcr(rgb)[:1]
    with torch.no_grad():
        f1, f2 = model.encode(torch.stack([a, y])).chunk(2)
        fy = model.decode(fuse_features(f1, f2, "sfnn-max")).clamp(0, 1)
    expected = ycbcr_to_rgb(torch.cat([fy[0], rgb_to_ycbcr(rgb)[1:]]))
    assert torch.allclose(res.fused, expected, atol=1e-5)
    pngs = ex.panels(1, res, "fused - second", zoom=2)
    assert all(v[:4] == b"\x89PNG" for v in pngs.values())


def test_image_bytes():
    from PIL import Image

    x = torch.linspace(0, 1, 64).reshape(1, 8, 8)
    img = Image.open(io.BytesIO(image_bytes(x, zoom=2)))
    assert img.size == (8, 8) and img.mode == "L"
    img = Image.open(io.BytesIO(image_bytes(x, fmt="jpeg", cmap="viridis")))
    assert img.format == "JPEG" and img.mode == "RGB"


def _decoded(uri: str) -> np.ndarray:
    """A data URI's image as a float array of grey levels (0..255)."""
    from PIL import Image

    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)


def _block_means(levels: np.ndarray) -> np.ndarray:
    """The means of the 8 x 8 blocks a JPEG codes (H, W divisible by 8) -> (H/8, W/8)."""
    h, w = levels.shape
    return levels.reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))


# At quality 85 the DC step of libjpeg's luminance table is 5 (16 x 0.3), one block mean step
# of 5/8 grey level. Inputs whose block means differ by more than JPEG_STEP levels (a DC step,
# the rounding to uint8 and the integer DCT's error, with a margin) code to different JPEGs.
JPEG_STEP = 3.0
# A decoded block mean lies within JPEG_TOLERANCE levels of its input's (measured: 2.5 at
# most on these images, most of it ringing clipped at black).
JPEG_TOLERANCE = 4.0


def test_static_explorer_html(dataset):
    """Each page image is its entry's fused image; images whose inputs differ by more than a
    JPEG step differ. (Two entries with nearly equal weights, e.g. an SFNN W1 of 0.505 and the
    grid's 0.5, may code to the same JPEG: they are the same picture.)"""
    model = pretrained("dilran-lite")  # trained: W1 changes show at 64 px, unlike a random net
    strategies = ("sfnn-max", "fer", "max")
    grid = (0.0, 0.5, 1.0)
    page = static_explorer_html(model, dataset, strategies, grid, metrics=("EN", "MI"))
    assert "<script src" not in page and "http" not in page  # nothing loaded from outside
    payload = re.search(r'type="application/json" id="dilran-explorer-data">(.*?)</script>', page)
    data = json.loads(payload.group(1))
    assert data["w1"] == list(grid) and len(data["pairs"]) == len(dataset)
    ex = FusionExplorer(model, dataset, metrics=("EN", "MI"))
    for i, p in enumerate(data["pairs"]):
        assert set(p["auto"]) == set(strategies) and len(p["grid"]) == len(grid)
        names = [*strategies, *(f"W1={w}" for w in grid)]
        srcs = [p["auto"][s]["img"] for s in strategies] + [e["img"] for e in p["grid"]]
        assert all(s.startswith("data:image/jpeg;base64,") for s in srcs)
        fused = [ex.update(i, s).fused for s in strategies]
        fused += [ex.update(i, strategies[0], w1=w).fused for w in grid]
        inputs = [_block_means(f[0].double().numpy() * 255) for f in fused]
        for name, src, want in zip(names, srcs, inputs):  # the right image in each entry
            err = np.abs(_block_means(_decoded(src)) - want).max()
            assert err <= JPEG_TOLERANCE, (name, err)
        must_differ = {
            (names[j], names[k])
            for j, k in itertools.combinations(range(len(names)), 2)
            if np.abs(inputs[j] - inputs[k]).max() > JPEG_STEP
        }
        for j, k in itertools.combinations(range(len(names)), 2):
            if (names[j], names[k]) in must_differ:
                assert srcs[j] != srcs[k], (names[j], names[k])
        # the test is not vacuous: every strategy, and every grid step, changes the picture
        assert set(itertools.combinations(names[: len(strategies)], 2)) <= must_differ
        assert set(itertools.combinations(names[len(strategies) :], 2)) <= must_differ
    p = data["pairs"][0]
    assert p["grid"][0]["w1"] == "0.000" and p["grid"][0]["w2"] == "1.000"
    assert "map" in p["auto"]["fer"] and "map" not in p["auto"]["sfnn-max"]
    assert set(p["auto"]["sfnn-max"]["m"]) == {"EN", "MI"}
    w1 = float(ex.update(0, "sfnn-max").weights[0])
    assert p["auto"]["sfnn-max"]["w1"] == f"{w1:.3f}"


def test_explorer_modules_by_job():
    """figures <- widget <- core <- static: the display modules never import the explorer's
    state (imports written inside functions included)."""
    import ast
    from pathlib import Path

    import dilran_lite.explorer as pkg

    folder = Path(pkg.__file__).parent
    allowed = {
        "figures": set(),
        "widget": {"figures"},
        "core": {"figures", "widget"},
        "static": {"core", "figures"},
    }
    for name, ok in allowed.items():
        tree = ast.parse((folder / f"{name}.py").read_text())
        used = {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module
        }
        assert used == ok, (name, used)
