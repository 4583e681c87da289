"""Training: reproducible, checkpoints atomic and pickle-free, resume exact, mismatches refused."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_train_config

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
    return tiny_train_config(**kw)


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
    with pytest.raises(CheckpointError, match=r"lr: 0\.001 -> 0\.0005"):
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
    with pytest.raises(CheckpointError, match="missing.safetensors not found"):
        read_metadata(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a dilran-lite checkpoint"):
        read_metadata(plain)


def test_atomic_write_leaves_the_old_checkpoint_on_failure(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.safetensors", build_model("lite"), {"epoch": 1})
    import dilran_lite.checkpoint as T

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


# ------------------------------------------------------------------------------------------
# Nothing lost: run folders, resume, temp files, options
# ------------------------------------------------------------------------------------------
def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, capsys):
    from dilran_lite.cli import main
    from dilran_lite.errors import UserError

    train(tiny(epochs=1), tmp_path, progress=False)
    before = _files(tmp_path)
    with pytest.raises(UserError, match="already holds a training run.*--resume.*--overwrite"):
        train(tiny(epochs=1, seed=3), tmp_path, progress=False)
    assert _files(tmp_path) == before
    assert main(["train", "--out", str(tmp_path), "--quick", "--data", "phantom"]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and err.count("\n") == 1
    assert _files(tmp_path) == before
    # an explicit overwrite replaces the run
    _, meta = train(tiny(epochs=1, seed=3), tmp_path, progress=False, overwrite=True)
    assert read_metadata(tmp_path / "last.safetensors")["train_config"]["seed"] == 3
    assert read_metadata(tmp_path / "best.safetensors")["train_config"]["seed"] == 3


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    from dilran_lite.cli import main

    with pytest.raises(CheckpointError, match="cannot resume.*last.safetensors not found"):
        train(tiny(), tmp_path / "typo", progress=False, resume=True)
    assert not (tmp_path / "typo").exists()
    assert main(["train", "--out", str(tmp_path / "typo"), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    # resume="auto" starts a new run when there is none
    _, meta = train(tiny(epochs=1), tmp_path / "auto", progress=False, resume="auto")
    assert meta["epoch"] == 1


def test_resume_takes_the_configuration_from_the_checkpoint(tmp_path, capsys):
    from dilran_lite.cli import main

    train(tiny(epochs=1), tmp_path, progress=False)
    _, meta = train(None, tmp_path, progress=False, resume=True)  # nothing repeated by hand
    assert (
        meta["epoch"] == 1
        and meta["train_config"] == read_metadata(tmp_path / "last.safetensors")["train_config"]
    )
    # the command line: only --epochs given; every other value comes from the checkpoint
    args = ["train", "--out", str(tmp_path), "--resume", "--epochs", "2", "--device", "cpu"]
    assert main(args) == 0
    assert read_metadata(tmp_path / "last.safetensors")["epoch"] == 2
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path), "--resume", "--lr", "0.5", "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.001 -> 0.5" in err and "seed: 0 -> 4" in err and err.count("\n") == 1
    assert read_metadata(tmp_path / "last.safetensors")["epoch"] == 2


def test_stale_temp_cleanup_touches_only_the_trainers_own_files(tmp_path):
    ours = tmp_path / ".last.safetensors.dilran-partial-k1ll3d.tmp"
    theirs = [tmp_path / ".notes.tmp", tmp_path / ".last.safetensors.x.tmp", tmp_path / "a.tmp"]
    for p in [ours, *theirs]:
        p.write_text("x")
    train(tiny(epochs=1), tmp_path, progress=False)
    assert not ours.exists()
    assert all(p.read_text() == "x" for p in theirs)


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--batch-size", "0"], "batch_size 0: must be an integer from 1 to 1024"),
        (["--epochs", "0"], "epochs 0: must be an integer from 1 to 100000"),
        (["--lr", "-1"], "lr -1.0: must be a finite number > 0"),
        (["--lr", "nan"], "lr nan: must be a finite number > 0"),
        (["--crop", "0"], "crop 0: must be None or an integer from 16 to 4096"),
        (["--lambda2", "-0.5"], "lambda2 -0.5: must be a finite number >= 0"),
        (["--device", "tpu9"], "unknown device 'tpu9'"),
    ],
)
def test_bad_options_give_one_line_and_exit_2_before_any_work(tmp_path, capsys, flags, says):
    from dilran_lite.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--quick", "--data", "phantom", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and err.startswith("dilran-lite: error:") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    from dilran_lite.cli import main
    from dilran_lite.errors import UserError

    assert main(["train", "--out", str(tmp_path / "r"), "--quick", "--device", "cuda"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err
    with pytest.raises(UserError, match="no CUDA GPU"):
        train(tiny(), tmp_path / "r", device="cuda", progress=False)
    assert not (tmp_path / "r").exists()


def test_the_python_api_checks_the_same_options():
    from dilran_lite.errors import UserError

    with pytest.raises(UserError, match="epochs 0"):
        tiny(epochs=0)
    with pytest.raises(UserError, match="batch_size 0.*lr -1"):
        tiny(batch_size=0, lr=-1)
    with pytest.raises(UserError, match="width 200000"):
        tiny(model={"width": 200000})
    cfg = tiny()
    cfg.epochs = 0  # changed after construction: checked again by train()
    with pytest.raises(UserError, match="epochs 0"):
        train(cfg, "never-written", progress=False)
    assert not os.path.exists("never-written")


# ------------------------------------------------------------------------------------------
# A checkpoint is checked before use
# ------------------------------------------------------------------------------------------
def _write(path, tensors, meta):
    from safetensors.torch import save_file

    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, str(path), metadata={"dilran_lite": text})
    return path


def _good(tmp_path):
    model = build_model("lite")
    path = save_checkpoint(tmp_path / "good.safetensors", model)
    tensors = {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        for k in fh.keys():
            tensors[k] = fh.get_tensor(k)
    return path, tensors, read_metadata(path)


def test_nan_and_inf_weights_are_refused_by_name(tmp_path):
    path, tensors, meta = _good(tmp_path)
    key = sorted(tensors)[3]
    for bad in (float("nan"), float("inf")):
        t = dict(tensors)
        t[key] = t[key].clone().view(-1)
        t[key][0] = bad
        t[key] = t[key].view(tensors[key].shape)
        p = _write(tmp_path / "nan.safetensors", t, meta)
        with pytest.raises(CheckpointError, match=rf"tensor {key[6:]} holds 1 NaN or infinite"):
            load_checkpoint(p)


def test_integer_tensors_are_refused(tmp_path):
    path, tensors, meta = _good(tmp_path)
    key = sorted(tensors)[0]
    t = {**tensors, key: tensors[key].view(torch.int32)}  # the float bits read as int32
    p = _write(tmp_path / "int.safetensors", t, meta)
    with pytest.raises(CheckpointError, match=rf"tensor {key[6:]} is stored as int32"):
        load_checkpoint(p)


def test_overwritten_bytes_are_refused(tmp_path):
    path, _, _ = _good(tmp_path)
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    data = bytearray(raw)
    data[8 + header_len + 64 : 8 + header_len + 64 + 256] = b"\xff" * 256  # NaN bit patterns
    (tmp_path / "d.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(tmp_path / "d.safetensors")
    head = bytearray(raw)
    head[20:40] = b"\x00" * 20  # inside the header's JSON
    (tmp_path / "h.safetensors").write_bytes(bytes(head))
    with pytest.raises(CheckpointError, match=r"h\.safetensors"):
        load_checkpoint(tmp_path / "h.safetensors")


def test_out_of_range_config_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    from dilran_lite import train as T

    path, tensors, meta = _good(tmp_path)
    monkeypatch.setattr(T, "DILRAN", lambda *a, **k: pytest.fail("model built"))
    for change, says in (
        ({"width": 200000}, "width 200000"),
        ({"dilations": [1] * 100}, "dilations"),
        ({"recon_widths": [-3]}, "recon_widths"),
        ({"activation": "os.system"}, "activation 'os.system'"),
        ({"width": "64"}, "width '64'"),
        ({"depth": 3}, "unknown model_config keys ['depth']"),
    ):
        p = _write(
            tmp_path / "w.safetensors",
            tensors,
            {**meta, "model_config": {**meta["model_config"], **change}},
        )
        with pytest.raises(CheckpointError, match=rf"w\.safetensors.*{re.escape(says)}"):
            load_checkpoint(p)


def test_malformed_headers_are_named(tmp_path):
    path, tensors, meta = _good(tmp_path)
    cases = [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"format": meta["format"]}), "lacks its model_config"),
        (json.dumps({**meta, "format": "other/9"}), "has format 'other/9'"),
        (json.dumps({**meta, "model_config": [64]}), "model_config must be a JSON object"),
    ]
    for text, says in cases:
        p = _write(tmp_path / "m.safetensors", tensors, text)
        with pytest.raises(CheckpointError, match=rf"m\.safetensors.*{re.escape(says)}"):
            load_checkpoint(p)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    path, tensors, meta = _good(tmp_path)
    keys = sorted(k for k in tensors if k.startswith("model.") and tensors[k].ndim == 4)
    t = {k: v for k, v in tensors.items() if k != keys[0]}
    t["model.extra.weight"] = torch.zeros(2)
    t[keys[1]] = torch.zeros(1, 1, 1, 1)
    p = _write(tmp_path / "k.safetensors", t, meta)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(p)
    msg = str(err.value)
    assert keys[0][6:] in msg and "extra.weight" in msg and f"{keys[1][6:]} (1, 1, 1, 1)" in msg
