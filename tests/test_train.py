"""Training: reproducible, checkpoints atomic and pickle-free, resume exact, mismatches refused."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dilran_lite.model import build_model
from dilran_lite.train import (
    CheckpointError,
    TrainConfig,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    train,
)


def tiny(**kw) -> TrainConfig:
    base = dict(
        preset="lite",
        model={"width": 8, "recon_widths": [8, 8]},
        data="phantom",
        phantom_pairs=3,
        phantom_size=48,
        epochs=3,
        steps_per_epoch=2,
        batch_size=2,
        crop=32,
        augment=True,
        lr=1e-3,
        lambda2=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_train_writes_checkpoints_and_history(tmp_path):
    model, meta = train(tiny(), tmp_path, progress=False)
    h = meta["history"]
    assert len(h["train_loss"]) == len(h["val_loss"]) == 3
    assert all(x > 0 and x == x for x in h["train_loss"] + h["val_loss"])
    for name in ("last", "best"):
        assert (tmp_path / f"{name}.safetensors").is_file()
        sidecar = json.loads((tmp_path / f"{name}.json").read_text())
        assert sidecar["model_config"]["width"] == 8
        assert sidecar["perceptual"].startswith("off (lambda2 = 0)")
        assert sidecar["package_version"]
    assert read_metadata(tmp_path / "last.safetensors")["epoch"] == 3
    assert not list(tmp_path.glob(".*.tmp"))
    loaded, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert same(weights(loaded), weights(model))


def test_seeded_runs_are_identical(tmp_path):
    m1, _ = train(tiny(epochs=2), tmp_path / "a", progress=False)
    m2, _ = train(tiny(epochs=2), tmp_path / "b", progress=False)
    m3, _ = train(tiny(epochs=2, seed=1), tmp_path / "c", progress=False)
    assert same(weights(m1), weights(m2))
    assert not same(weights(m1), weights(m3))


def test_resume_continues_exactly(tmp_path):
    full, meta_full = train(tiny(), tmp_path / "full", progress=False)
    part, meta = train(tiny(), tmp_path / "part", progress=False, max_epochs=1)
    assert meta["epoch"] == 1
    resumed, meta = train(tiny(), tmp_path / "part", progress=False, resume=True)
    assert meta["epoch"] == 3 and len(meta["history"]["train_loss"]) == 3
    assert meta["history"]["train_loss"] == pytest.approx(meta_full["history"]["train_loss"])
    for k, v in weights(full).items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_resume_refuses_another_config(tmp_path):
    train(tiny(epochs=1), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="lr"):
        train(tiny(epochs=2, lr=5e-4), tmp_path, progress=False, resume=True)


def test_resume_with_a_new_learning_rate(tmp_path):
    train(tiny(epochs=1), tmp_path, progress=False)
    model, meta = train(
        tiny(epochs=2, lr=1e-4), tmp_path, progress=False, resume=True, change_lr=True
    )
    assert meta["epoch"] == 2
    assert meta["history"]["lr"] == [tiny().lr, 1e-4]
    assert meta["train_config"]["lr"] == 1e-4
    with pytest.raises(CheckpointError, match="seed"):
        train(
            tiny(epochs=3, lr=1e-4, seed=5), tmp_path, progress=False, resume=True, change_lr=True
        )


def test_init_from_weights_with_another_reconstructor(tmp_path):
    src, _ = train(tiny(epochs=1), tmp_path / "src", progress=False)
    cfg = tiny(epochs=1, model={"width": 8, "recon_widths": [8, 8], "recon_activation": False})
    model, meta = train(
        cfg,
        tmp_path / "affine",
        progress=False,
        max_epochs=0,
        init=tmp_path / "src" / "last.safetensors",
    )
    assert meta["init"].endswith("last.safetensors")
    assert same(weights(model), weights(src))  # every parameter copied
    assert model.config.recon_activation is False
    with pytest.raises(CheckpointError, match="do not fit"):
        train(
            tiny(model={"width": 4}),
            tmp_path / "bad",
            progress=False,
            init=tmp_path / "src" / "last.safetensors",
        )
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(tiny(), tmp_path / "none", progress=False, init=tmp_path / "missing.safetensors")


def test_load_refuses_a_mismatched_model(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("lite"))
    with pytest.raises(CheckpointError, match="width: model has 64, checkpoint has 16"):
        load_checkpoint(path, build_model("paper"))
    model, meta = load_checkpoint(path)  # builds the model from the stored config
    assert model.config.width == 16 and meta["format"].startswith("dilran-lite")


def test_float16_storage_loads_into_a_float32_model(tmp_path):
    from safetensors import safe_open

    model = build_model("lite")
    path = save_checkpoint(tmp_path / "m.safetensors", model, dtype=torch.float16)
    with safe_open(str(path), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    loaded, meta = load_checkpoint(path)
    assert meta["stored_dtype"] == "float16"
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert b.dtype == torch.float32
        # float16 keeps 11 significant bits: relative rounding <= 2^-11
        assert torch.allclose(a, b, rtol=2**-11, atol=1e-7)
        assert torch.equal(b, a.half().float())


def test_load_never_unpickles(tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save(build_model("lite").state_dict(), pickled)
    with pytest.raises(CheckpointError, match="never loads pickled"):
        load_checkpoint(pickled)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError):
        read_metadata(junk)
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a dilran-lite checkpoint"):
        read_metadata(plain)


def test_atomic_write_leaves_the_old_checkpoint_on_failure(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.safetensors", build_model("lite"), {"epoch": 1})
    import dilran_lite.train as T

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(T, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, build_model("lite"), {"epoch": 2})
    assert read_metadata(path)["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


SCRIPT = """
import sys
from dilran_lite.train import TrainConfig, train
cfg = TrainConfig(**{cfg!r})
train(cfg, sys.argv[1], resume="auto", progress=False)
"""


def test_kill_9_loses_at_most_the_current_epoch(tmp_path):
    cfg = dict(tiny(epochs=400, steps_per_epoch=3).__dict__)
    code = SCRIPT.format(cfg=cfg)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "last.json").is_file():
                if json.loads((out / "last.json").read_text())["epoch"] >= 2:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("training wrote no checkpoint in time")
        time.sleep(0.3)  # somewhere inside a later epoch (or a write)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = read_metadata(out / "last.safetensors")["epoch"]
    assert done >= 2
    _, meta = train(TrainConfig(**{**cfg, "epochs": done + 1}), out, resume=True, progress=False)
    assert meta["epoch"] == done + 1
    assert len(meta["history"]["train_loss"]) == done + 1
    assert not list(out.glob(".*.tmp"))
