"""The learned fusion layer (dilran_lite.learned): shapes, invariants, objective, checkpoints."""

import pytest
import torch

from dilran_lite.learned import (
    MODEL_KIND,
    FusionObjective,
    LearnedConfig,
    LearnedFusion,
    WeightNet,
    learned_quick_config,
    load_learned_fusion,
    ssim_map,
    train_learned_fusion,
)
from dilran_lite.model import build_model
from dilran_lite.pretrained import available, load_weights, pretrained
from dilran_lite.train import CheckpointError, read_metadata, save_checkpoint


def _layer(width: int = 16) -> LearnedFusion:
    torch.manual_seed(0)
    return LearnedFusion(LearnedConfig("dilran-lite", width)).attach(build_model("lite").eval())


def test_weight_net_starts_at_a_soft_maximum_and_at_the_average_without_gain():
    net = WeightNet(width=8, hidden=4)
    f1, f2 = torch.randn(2, 8, 20, 24), torch.randn(2, 8, 20, 24)
    a, b = torch.rand(2, 1, 20, 24), torch.rand(2, 1, 20, 24)
    w = net(f1, f2, a, b)
    assert w.shape == (2, 1, 20, 24)
    torch.testing.assert_close(w, torch.sigmoid(10 * (a - b)))  # zero-initialised last layer
    with torch.no_grad():
        net.gain.zero_()
    torch.testing.assert_close(net(f1, f2, a, b), torch.full_like(w, 0.5))
    assert (WeightNet(8, 4, with_images=False)(f1, f2, a, b) == 0.5).all()


def test_mix_is_a_per_pixel_convex_combination():
    layer = _layer()
    torch.nn.init.normal_(layer.weight_net.body[-1].weight, std=1.0)
    f1, f2 = torch.randn(1, 16, 16, 16), torch.randn(1, 16, 16, 16)
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    fused, w = layer.mix(f1, f2, a, b)
    assert ((w >= 0) & (w <= 1)).all() and w.std() > 0  # a map, not one number
    torch.testing.assert_close(fused, w * f1 + (1 - w) * f2)
    lo, hi = torch.minimum(f1, f2), torch.maximum(f1, f2)
    assert ((fused >= lo - 1e-6) & (fused <= hi + 1e-6)).all()


def test_fuse_shapes_and_range():
    layer = _layer()
    a, b = torch.rand(1, 32, 32), torch.rand(1, 32, 32)
    out, w = layer(a, b, return_weights=True)
    assert out.shape == (1, 32, 32) and w.shape == (1, 32, 32)
    assert 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="differ in shape"):
        layer(a, torch.rand(1, 32, 30))


def test_attach_refuses_a_backbone_of_another_width():
    with pytest.raises(ValueError, match="channels"):
        LearnedFusion(LearnedConfig(width=64)).attach(build_model("lite"))


def test_ssim_map_of_an_image_with_itself_is_one():
    x = torch.rand(1, 1, 32, 32)
    s = ssim_map(x, x)
    assert s.shape == (1, 1, 22, 22)
    torch.testing.assert_close(s, torch.ones_like(s))
    assert ssim_map(x, 1 - x).mean() < 0.5


def test_objective_is_zero_at_the_maximum_of_equal_sources_and_prefers_the_brighter():
    a = torch.rand(2, 1, 32, 32)
    obj = FusionObjective(alpha=1.0, beta=1.0)
    assert float(obj(a, a, a)) == pytest.approx(0.0, abs=1e-5)
    dark = torch.zeros_like(a)
    terms = obj.terms(dark, a, dark)
    torch.testing.assert_close(terms["intensity"], a.mean())
    assert float(obj(a, a, dark)) < float(obj(dark, a, dark))


def test_checkpoint_round_trip_and_shipped_loading(tmp_path):
    layer = _layer()
    torch.nn.init.normal_(layer.weight_net.body[-1].weight)
    path = save_checkpoint(tmp_path / "lf.safetensors", layer, {"model_kind": MODEL_KIND})
    again = load_learned_fusion(path)
    assert again.config == layer.config
    for p, q in zip(layer.parameters(), again.parameters()):
        torch.testing.assert_close(p, q)
    assert isinstance(load_weights(path), LearnedFusion)  # pretrained's loader dispatches
    dilran = save_checkpoint(tmp_path / "d.safetensors", build_model("lite"))
    with pytest.raises(CheckpointError, match="not a learned-fusion"):
        load_learned_fusion(dilran)


def test_train_on_the_phantom_lowers_the_loss_and_resumes(tmp_path):
    cfg = learned_quick_config(
        phantom_pairs=3,
        crop=48,
        crops_per_pair=2,
        epochs=2,
        steps_per_epoch=4,
        batch_size=4,
        val_limit=1,
    )
    cache: dict = {}
    model, meta = train_learned_fusion(cfg, tmp_path, progress=False, cache=cache)
    assert isinstance(model, LearnedFusion)
    hist = meta["history"]
    assert len(hist["val_loss"]) == 2 and meta["model_kind"] == MODEL_KIND
    assert read_metadata(tmp_path / "last.safetensors")["epoch"] == 2
    cfg.epochs = 3
    _, meta = train_learned_fusion(cfg, tmp_path, resume=True, progress=False, cache=cache)
    assert len(read_metadata(tmp_path / "last.safetensors")["history"]["val_loss"]) == 3
    cfg.alpha = 5.0
    with pytest.raises(CheckpointError, match="alpha"):
        train_learned_fusion(cfg, tmp_path, resume=True, progress=False, cache=cache)


@pytest.mark.parametrize("name", ["learned-fusion", "learned-fusion-paper-split"])
def test_shipped_learned_weights(name):
    if name not in available():
        pytest.skip(f"{name} not shipped")
    layer = pretrained(name)
    assert isinstance(layer, LearnedFusion) and layer.config.backbone.startswith("dilran-paper")
    a = torch.zeros(1, 1, 48, 48)
    b = torch.zeros(1, 1, 48, 48)
    a[..., 10:30, 10:30] = 0.8
    b[..., 20:40, 20:40] = 0.9
    out = layer(a, b)
    assert out.shape == a.shape and 0 <= out.min() and out.max() <= 1


def test_beyond_table_ranks_the_learned_layer_against_every_method():
    from dilran_lite.experiments import (
        BEYOND_METRICS,
        STRATEGY_ORDER,
        beyond_goal,
        beyond_runs,
        beyond_table,
        fuse_with_model,
        score_runs,
    )
    from dilran_lite.phantom import PhantomDataset

    ds = PhantomDataset(n=2, size=64, seed=5)
    pairs = [
        (a.float(), b.float(), f"p{i}") for i, (a, b, *_) in enumerate(ds[i] for i in range(2))
    ]
    layer = _layer()
    with torch.no_grad():
        layer.weight_net.gain.zero_()  # untrained, no gain: w = 0.5, the feature average
    runs = beyond_runs(pairs, "test", layer.backbone, layer, "dilran-lite", "lf")
    n = len(runs) - len(STRATEGY_ORDER) - 1  # the classical baselines come first
    assert runs[n].method == "dilran-lite + fer" and runs[-1].method == "learned fusion (lf)"
    assert [r.strategy for r in runs[n:-1]] == STRATEGY_ORDER
    avg = fuse_with_model(layer.backbone, pairs, ["average"], "lf", "test")["average"]
    for name in avg.fused:
        diff = runs[-1].fused[name].astype(int) - avg.fused[name].astype(int)
        assert abs(diff).max() <= 1  # same image up to 8-bit rounding
    score_runs(runs, {"test": pairs}, BEYOND_METRICS)
    table = beyond_table(runs)
    assert list(table.index[-3:]) == ["best other", "learned / best", "wins"]
    assert len(table) == len(runs) + 3
    best = table.iloc[:-4][BEYOND_METRICS].max()
    torch.testing.assert_close(
        torch.tensor(table.loc["best other", BEYOND_METRICS].to_numpy(float)),
        torch.tensor(best.to_numpy(float)),
    )
    goal = beyond_goal(table)
    assert 0 <= goal["wins"] <= 8 and isinstance(goal["goal_met"], bool)
