"""The exercise checkers: the package's own code passes, a NotImplementedError stub is "not done
yet" (no traceback), a wrong version fails and names the first difference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dilran_lite import exercises as ex
from dilran_lite import losses, metrics
from dilran_lite.fusion import sfnn_weights
from dilran_lite.model import (
    PRESETS,
    DILRANBlock,
    FeatureExtractor,
    PyramidAttention,
    Reconstructor,
    ResidualAttentionBlock,
)
from dilran_lite.train import train_step

LITE = PRESETS["lite"]


def stub(*args, **kwargs):
    raise NotImplementedError


class StubModule(nn.Module):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        raise NotImplementedError


def package_loop(model, opt, loss_fn, images, epochs, batch_size):
    out = []
    for _ in range(epochs):
        total = 0.0
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            total += train_step(model, opt, loss_fn, x).item() * len(x)
        out.append(total / len(images))
    return out


def skipping_loop(model, opt, loss_fn, images, epochs, batch_size):
    return package_loop(model, opt, loss_fn, images[:-1], epochs, batch_size)


def no_zero_grad_step(model, opt, loss_fn, x):
    loss = loss_fn(model(x), x)
    loss.backward()  # gradients accumulate: the second step differs
    opt.step()
    return loss.detach()


class NoMaskSigmoid(nn.Module):
    """Eq. 1 without the sigmoid at the end of the mask: same parameters, other values."""

    def __init__(self, c_in, c_out, trunk_kernel=3):
        super().__init__()
        self.ref = ResidualAttentionBlock(c_in, c_out, LITE, trunk_kernel)
        self.ref.mask.act = nn.Identity()

    def forward(self, x):
        return self.ref(x)


CASES = {
    "residual_attention": (
        ex.check_residual_attention,
        lambda c_in, c_out, trunk_kernel=3: ResidualAttentionBlock(c_in, c_out, LITE, trunk_kernel),
        StubModule,
        NoMaskSigmoid,
        "differs at index",
    ),
    "pyramid_attention": (
        ex.check_pyramid_attention,
        lambda c_in, c_out: PyramidAttention(c_in, c_out, LITE),
        StubModule,
        lambda c_in, c_out: PyramidAttention(
            c_in, c_out, PRESETS["lite"].__class__(width=16, mask_activation="none")
        ),
        "differs at index",
    ),
    "dilran_block": (
        ex.check_dilran_block,
        lambda width, dilations: DILRANBlock(LITE),
        StubModule,
        lambda width, dilations: DILRANBlock(LITE.__class__(width=16, dilations=(1, 2, 4))),
        "differs at index",
    ),
    "feature_extractor": (
        ex.check_feature_extractor,
        lambda width: FeatureExtractor(LITE),
        StubModule,
        lambda width: FeatureExtractor(LITE.__class__(width=16, skip="identity")),
        "the first that differs is number 26",
    ),
    "reconstructor": (
        ex.check_reconstructor,
        lambda width, widths: Reconstructor(LITE),
        StubModule,
        lambda width, widths: Reconstructor(LITE.__class__(width=16, recon_widths=(16, 8))),
        "has shape",
    ),
    "mse": (ex.check_mse, losses.mse_term, stub, lambda o, t: ((o - t) ** 2).sum(), "differs"),
    "gradient": (
        ex.check_gradient,
        losses.gradient_term,
        stub,
        lambda o, t: losses.gradient_term(o, t, "diff"),
        "differs",
    ),
    "perceptual": (
        ex.check_perceptual,
        lambda o, t, backbone: losses.PerceptualLoss(backbone=backbone)(o, t),
        stub,
        lambda o, t, backbone: (
            (backbone(o.repeat(1, 3, 1, 1)) - backbone(t.repeat(1, 3, 1, 1))) ** 2
        ).mean(),  # forgets the ImageNet normalisation
        "differs",
    ),
    "train_step": (
        ex.check_train_step,
        train_step,
        stub,
        no_zero_grad_step,
        "after step 2",
    ),
    "training_loop": (ex.check_training_loop, package_loop, stub, skipping_loop, "steps"),
    "sfnn": (
        ex.check_sfnn,
        sfnn_weights,
        stub,
        lambda f1, f2, phi: sfnn_weights(f1.softmax(1), f2.softmax(1), phi),  # softmax twice
        "W1 for phi=max differs",
    ),
    "entropy": (
        ex.check_entropy,
        metrics.entropy,
        stub,
        lambda f: metrics.entropy(f) * np.log(2),  # nats instead of bits
        "test image 1 differs",
    ),
    "mutual_information": (
        ex.check_mutual_information,
        metrics.mutual_information,
        stub,
        lambda a, b, f: (metrics.mi(f, a) + metrics.mi(f, b)) / 2,  # the published code's mean
        "test case 1 differs",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_package_implementation_passes(name, capsys):
    check, ref, *_ = CASES[name]
    v = check(ref)
    assert v.status == "passed", str(v)
    assert v.exercise == name
    assert capsys.readouterr().out.startswith(f"exercise {name}: passed")


@pytest.mark.parametrize("name", sorted(CASES))
def test_stub_is_not_done(name, capsys):
    check, _, stub_impl, *_ = CASES[name]
    v = check(stub_impl)
    assert v.status == "not done yet"
    out = capsys.readouterr().out
    assert "still raises NotImplementedError" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_implementation_fails_with_first_difference(name):
    check, _, _, wrong, fragment = CASES[name]
    v = check(wrong)
    assert v.status == "failed", str(v)
    assert fragment in v.detail, v.detail


def test_student_names_and_order_are_enough():
    """A student's block with its own attribute names matches when the layers come in order."""

    class Mine(nn.Module):
        def __init__(self, c_in, c_out, trunk_kernel=3):
            super().__init__()
            self.t = nn.Conv2d(c_in, c_out, trunk_kernel, padding=trunk_kernel // 2)
            self.m1 = nn.Conv2d(c_in, c_out, 3, padding=1)
            self.m2 = nn.Conv2d(c_out, c_out, 3, padding=1)

        def forward(self, x):
            m = self.m2(torch.relu(self.m1(nn.functional.max_pool2d(x, 2, ceil_mode=True))))
            m = nn.functional.interpolate(m, size=x.shape[-2:], mode="bilinear")
            return (1 + torch.sigmoid(m)) * torch.relu(self.t(x))

    assert ex.check_residual_attention(Mine).passed


def test_error_in_student_code_is_one_line():
    def broken(o, t):
        return o.nosuch()

    v = ex.check_mse(broken)
    assert v.status == "failed" and "AttributeError" in v.detail and "\n" not in v.detail


def test_solutions_enabled(monkeypatch):
    monkeypatch.delenv("DILRAN_SOLUTIONS", raising=False)
    assert not ex.solutions_enabled()
    monkeypatch.setenv("DILRAN_SOLUTIONS", "1")
    assert ex.solutions_enabled()
    monkeypatch.setenv("DILRAN_SOLUTIONS", "0")
    assert not ex.solutions_enabled()


def test_random_vgg_matches_torchvision_layout():
    from torchvision.models import vgg16

    ours = ex.random_vgg_features()
    theirs = vgg16().features[: losses.VGG_LAYERS["relu3_3"]]
    assert [tuple(p.shape) for p in ours.parameters()] == [
        tuple(p.shape) for p in theirs.parameters()
    ]


def test_messages_name_the_likely_mistake():
    def nats(f):
        counts = np.bincount(f.ravel(), minlength=256)
        p = counts[counts > 0] / f.size
        return float(-(p * np.log(p)).sum())

    v = ex.check_entropy(nats)
    assert v.status == "failed" and "ln 2" in v.detail and "nats" in v.detail
    v = ex.check_mse(lambda o, t: ((o - t) ** 2).sum())
    assert v.status == "failed" and "1792 times" in v.detail and "W*H" in v.detail

    def no_zero_grad(model, opt, loss_fn, x):
        loss = loss_fn(model(x), x)
        loss.backward()
        opt.step()
        return loss.detach()

    v = ex.check_train_step(no_zero_grad)
    assert v.status == "failed" and "weights in all are out of tolerance" in v.detail

    def with_graph(model, opt, loss_fn, x):
        loss = loss_fn(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    v = ex.check_train_step(with_graph)
    assert v.status == "failed" and "graph" in v.detail


def test_sfnn_check_catches_squaring_before_phi():
    def squared_first(f1, f2, phi="max"):
        summaries = {"mean": lambda n: n.mean(-1), "max": lambda n: n.amax(-1)}

        def activity(f):
            norms = torch.linalg.svdvals(torch.softmax(f, dim=1)).sum(-1)
            return summaries[phi.rstrip("2")](norms**2 if phi.endswith("2") else norms)

        a1, a2 = activity(f1), activity(f2)
        return a1 / (a1 + a2), a2 / (a1 + a2)

    v = ex.check_sfnn(squared_first)
    assert v.status == "failed" and "mean2" in v.detail
    assert ex.check_sfnn(squared_first, phis=("max", "mean", "max2")).passed
