"""Mixed precision: the autocast dtype follows the hardware (bfloat16 only where native)."""

from __future__ import annotations

import pytest
import torch

from dilran_lite.losses import FusionLoss
from dilran_lite.model import build_model
from dilran_lite.train import train_step
from dilran_lite.utils import amp_dtype, autocast


def test_cpu_has_no_autocast() -> None:
    assert amp_dtype("cpu") is None
    with autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


@pytest.mark.parametrize(
    ("capability", "bf16", "expected"),
    [((7, 5), True, torch.float16), ((8, 0), True, torch.bfloat16), ((9, 0), False, torch.float16)],
)
def test_cuda_dtype_follows_the_hardware(monkeypatch, capability, bf16, expected) -> None:
    """A T4 (7.5) reports emulated bf16 support: it must still get float16 (and loss scaling)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert amp_dtype("cuda") is expected


def test_explicit_dtype_and_off() -> None:
    with autocast("cpu", torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    for off in (False, None):
        with autocast("cpu", off):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_train_step_with_loss_scaling_equals_plain_step() -> None:
    """A GradScaler divides the gradients back before the step: same update as without it."""
    x = torch.rand(2, 1, 32, 32)
    losses, params = [], []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
        torch.manual_seed(0)
        model = build_model("lite")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses.append(train_step(model, opt, FusionLoss(0.2, 0.0), x, False, scaler).item())
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert losses[0] == pytest.approx(losses[1])
    torch.testing.assert_close(params[0], params[1], rtol=1e-4, atol=1e-6)
