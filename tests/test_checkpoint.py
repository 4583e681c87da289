"""The checkpoint format and the trainers' named steps: every size field bounded before any
allocation, non-finite state refused, a diverging run stopped before it writes NaN weights."""

import inspect
import json
import resource

import pytest
import torch
from conftest import tiny_train_config
from safetensors import safe_open
from safetensors.torch import save_file

from dilran_lite import checkpoint as C
from dilran_lite.cli import main
from dilran_lite.errors import CheckpointError, UserError
from dilran_lite.learned import LearnedConfig, load_learned_fusion
from dilran_lite.train import TrainConfig, fit_epoch, train
from dilran_lite.weights import WEIGHTS_DIR


def tiny(**kw) -> TrainConfig:
    """One epoch, whole crops without augmentation (the shared tiny run otherwise)."""
    return tiny_train_config(**{"epochs": 1, "augment": False, **kw})


def _rewrite(path, meta_change=None, tensor_change=None):
    """Rewrite a checkpoint's header (dict -> dict) and tensors (dict -> dict) in place."""
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["dilran_lite"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta = meta_change(meta) if meta_change else meta
    tensors = tensor_change(tensors) if tensor_change else tensors
    save_file(tensors, str(path), metadata={"dilran_lite": json.dumps(meta)})


@pytest.fixture()
def run(tmp_path):
    out = tmp_path / "run"
    train(tiny(), out, progress=False)
    return out


def test_resume_with_a_huge_batch_size_is_refused_before_any_allocation(run, capsys):
    def huge(meta):
        meta["train_config"]["batch_size"] = 10**9
        return meta

    _rewrite(run / "last.safetensors", huge)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_size 1000000000" in err[0] and "1 to 1024" in err[0]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 10**12), ("crop", 10**6), ("steps_per_epoch", 10**9), ("phantom_size", 10**5),
     ("val_limit", 10**9), ("phantom_pairs", 10**8)],
)
def test_every_size_field_is_bounded(field, value):
    with pytest.raises(UserError, match=f"{field} {value}"):
        tiny(**{field: value})


def test_nan_optimizer_state_is_refused_on_resume(run):
    def poison(tensors):
        key = next(k for k in tensors if k.startswith("optim.") and k.endswith("exp_avg"))
        tensors[key] = torch.full_like(tensors[key], float("nan"))
        return tensors

    _rewrite(run / "last.safetensors", tensor_change=poison)
    with pytest.raises(CheckpointError, match="optimizer state .* NaN or infinite"):
        train(None, run, resume=True, progress=False)


def test_a_diverging_run_stops_before_writing_nan_weights(run, monkeypatch):
    last = run / "last.safetensors"
    before = last.read_bytes()
    import dilran_lite.train as T

    def nan_step(model, opt, loss_fn, x, amp=None, scaler=None):
        return torch.tensor(float("nan"))

    monkeypatch.setattr(T, "train_step", nan_step)
    with pytest.raises(UserError, match="training diverged: the loss is nan at epoch 2, step 1"):
        train(tiny(epochs=2), run, resume=True, progress=False)
    assert last.read_bytes() == before  # the last finite checkpoint stays


def _learned_copy(tmp_path, change):
    path = tmp_path / "lf.safetensors"
    path.write_bytes((WEIGHTS_DIR / "learned-fusion.safetensors").read_bytes())
    _rewrite(path, change)
    return path


def test_a_learned_header_asking_for_a_huge_layer_is_refused(tmp_path):
    def huge(meta):
        meta["model_config"]["hidden"] = 200_000
        return meta

    path = _learned_copy(tmp_path, huge)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="hidden 200000"):
        load_learned_fusion(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


@pytest.mark.parametrize("name", ["../../etc/passwd", "/tmp/x.safetensors", "no-such", 7])
def test_a_learned_backbone_must_be_a_shipped_name(tmp_path, name):
    def other(meta):
        meta["model_config"]["backbone"] = name
        return meta

    with pytest.raises(CheckpointError, match="backbone"):
        load_learned_fusion(_learned_copy(tmp_path, other))
    with pytest.raises(CheckpointError, match="a shipped name"):
        LearnedConfig(backbone=name)


def test_unusable_vgg_weights_are_one_line(tmp_path, capsys):
    bad = tmp_path / "vgg.pth"
    bad.write_bytes(b"not a state dict")
    args = ["train", "--quick", "--data", "phantom", "--out", str(tmp_path / "r")]
    assert main([*args, "--lambda2", "0.2", "--vgg-weights", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "VGG16" in err[0] and "--lambda2 0" in err[0]


def test_fit_epoch_is_a_whole_function_a_chapter_can_print():
    src = inspect.getsource(fit_epoch)
    assert src.startswith("def fit_epoch(") and "train_step(" in src and "check_loss(" in src
    assert len(src.splitlines()) <= 60


def test_save_epoch_keeps_last_and_best(tmp_path):
    from dilran_lite.model import build_model

    model = build_model("lite")
    opt = torch.optim.Adam(model.parameters())
    history: dict = {}
    best = C.save_epoch(tmp_path, model, opt, {}, history, {"train_loss": 1, "val_loss": 0.5}, 1,
                        float("inf"), progress=False)
    best = C.save_epoch(tmp_path, model, opt, {}, history, {"train_loss": 1, "val_loss": 0.7}, 2,
                        best, progress=False)
    assert best == 0.5 and history["val_loss"] == [0.5, 0.7]
    assert C.read_metadata(tmp_path / "last.safetensors")["epoch"] == 2
    assert C.read_metadata(tmp_path / "best.safetensors")["epoch"] == 1


def test_a_diverging_learned_run_stops_before_writing(tmp_path, monkeypatch):
    import dilran_lite.learned as L

    class NaNObjective(torch.nn.Module):
        def forward(self, f, a, b):
            return (f * float("nan")).mean()

    monkeypatch.setattr(L, "make_objective", lambda cfg: NaNObjective())
    cfg = L.learned_quick_config(epochs=1, steps_per_epoch=2, phantom_pairs=2)
    with pytest.raises(UserError, match="training diverged"):
        L.train_learned_fusion(cfg, tmp_path / "lf", progress=False)
    assert not (tmp_path / "lf" / "last.safetensors").exists()
