"""Checkers for the build-it-yourself exercises of the book (no answers here).

Each ``check_*`` function takes the student's class or function, runs it next to the package's
own implementation with the same weights and inputs, prints a one-line verdict and returns it:

* ``exercise <id>: passed ...``          the student's version matches the package;
* ``exercise <id>: not done yet ...``    the scaffold still raises ``NotImplementedError``;
* ``exercise <id>: failed ...``          it runs but differs: the first difference found.

No traceback is shown: an exception in the student's code becomes a ``failed`` verdict that
names it. Weights are copied from the package's module into the student's by parameter name
when the names agree, else in the order the parameters were defined (shapes must agree).

The grader of a class's hand-ins lives in :mod:`dilran_lite.exercises.grader`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..settings import solutions_enabled

__all__ = [
    "Verdict",
    "solutions_enabled",
    "check_residual_attention",
    "check_pyramid_attention",
    "check_dilran_block",
    "check_feature_extractor",
    "check_reconstructor",
    "check_mse",
    "check_gradient",
    "check_perceptual",
    "check_train_step",
    "check_training_loop",
    "check_sfnn",
    "check_entropy",
    "check_mutual_information",
    "check_shift_mi",
    "random_vgg_features",
]

PASSED, NOT_DONE, FAILED = "passed", "not done yet", "failed"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``exercise`` id, ``status`` (passed / not done yet / failed)."""

    exercise: str
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def __str__(self) -> str:
        return f"exercise {self.exercise}: {self.status}: {self.detail}"


class _Stop(Exception):
    """Raised inside a check to end it with a verdict."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _run(what: str, fn: Callable, *args, **kwargs):
    """Call the student's code; NotImplementedError -> not done, any other error -> failed."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _Stop(NOT_DONE, f"{what} still raises NotImplementedError") from None
    except _Stop:
        raise
    except Exception as err:  # the student's bug, reported in one line
        raise _Stop(FAILED, f"{what} raised {type(err).__name__}: {err}") from None


def _verdict(exercise: str, body: Callable[[], str]) -> Verdict:
    """Run a check body (returns the success detail), print and return the verdict."""
    try:
        v = Verdict(exercise, PASSED, body())
    except _Stop as stop:
        v = Verdict(exercise, stop.status, stop.detail)
    print(v)
    return v


# ---------------------------------------------------------------------------------------------
# Comparing tensors and copying weights
# ---------------------------------------------------------------------------------------------
def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError):
        raise _Stop(
            FAILED, f"{what} is a {type(x).__name__}, expected a tensor or a number"
        ) from None


def _compare(what: str, mine, ref, atol: float = 1e-5, rtol: float = 1e-4) -> str:
    """Shapes, then values to a tolerance; the first differing element when they do not agree."""
    a, b = _as_tensor(mine, what), _as_tensor(ref, "the reference")
    if a.shape != b.shape:
        raise _Stop(FAILED, f"{what} has shape {tuple(a.shape)}, the package's {tuple(b.shape)}")
    if not torch.isfinite(a).all():
        raise _Stop(FAILED, f"{what} holds NaN or infinite values")
    bad = (a - b).abs() > atol + rtol * b.abs()
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        at = f" at index {idx}" if idx else ""
        count = (
            f" ({int(bad.sum())} of {bad.numel()} values differ; largest difference "
            f"{(a - b).abs().max().item():.3g})"
            if idx
            else ""
        )
        mine_v, ref_v = a[idx].item(), b[idx].item()
        raise _Stop(
            FAILED,
            f"{what} differs{at}: yours {mine_v:.6g}, the package's {ref_v:.6g}{count}"
            + _ratio_hint(a, b),
        )
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    return f"shape {tuple(a.shape)}, largest difference {diff:.2g}"


def _ratio_hint(a: torch.Tensor, b: torch.Tensor) -> str:
    """A hint when yours is the package's times a telling constant (ln 2, an integer, 1/k)."""
    if a.numel() != 1 or b.numel() != 1 or b.item() == 0 or a.item() == 0:
        return ""
    r = a.item() / b.item()
    if abs(r - math.log(2)) < 1e-3:
        return "; yours is ln 2 times the package's: a natural log gives nats, use log2 for bits"
    if abs(r - 1 / math.log(2)) < 1e-3:
        return "; yours is 1/ln 2 times the package's: the package's is in nats here?"
    for k, where in ((r, "yours is"), (1 / r, "the package's is")):
        if k >= 2 and abs(k - round(k)) < 1e-4 * k:
            return (f"; {where} {round(k)} times the other: a sum where a mean belongs, or a "
                    "missing (or extra) division by the number of pixels W*H or of the batch?")
    return ""


def _copy_weights(reference: nn.Module, student: nn.Module, what: str) -> str:
    """Load the reference's parameters into the student's module: by name, else by order."""
    ref_sd = {k: v for k, v in reference.state_dict().items()}
    own_sd = student.state_dict()
    if set(ref_sd) == set(own_sd) and all(ref_sd[k].shape == own_sd[k].shape for k in ref_sd):
        student.load_state_dict(ref_sd)
        return "by name"
    ref_p = list(reference.parameters())
    own_p = list(student.parameters())
    ref_shapes = [tuple(p.shape) for p in ref_p]
    own_shapes = [tuple(p.shape) for p in own_p]
    if len(own_p) != len(ref_p):
        first = next(
            (i for i, (m, r) in enumerate(zip(own_shapes, ref_shapes)) if m != r),
            min(len(own_p), len(ref_p)),
        )
        yours = own_shapes[first] if first < len(own_p) else "nothing"
        theirs = ref_shapes[first] if first < len(ref_p) else "nothing"
        raise _Stop(
            FAILED,
            f"{what} has {len(own_p)} parameter tensors, the package's {len(ref_p)}; the first "
            f"that differs is number {first} (in the order defined): yours {yours}, "
            f"the package's {theirs}",
        )
    for i, (mine, ref) in enumerate(zip(own_shapes, ref_shapes)):
        if mine != ref:
            raise _Stop(
                FAILED,
                f"parameter {i} of {what} (in the order defined) has shape {mine}, "
                f"the package's {ref}: check the layers and their order",
            )
    with torch.no_grad():
        for mine, ref in zip(own_p, ref_p):
            mine.copy_(ref)
    return "in the order you defined them"


def _check_module(
    exercise: str,
    name: str,
    build: Callable[[], nn.Module],
    reference: nn.Module,
    inputs: Sequence[torch.Tensor],
) -> str:
    student = _run(f"building your {name}", build)
    if not isinstance(student, nn.Module):
        raise _Stop(FAILED, f"your {name} is a {type(student).__name__}, not a torch.nn.Module")
    how = _copy_weights(reference, student, f"your {name}")
    student.eval()
    reference.eval()
    details = []
    with torch.no_grad():
        for x in inputs:
            out = _run(f"your {name}.forward", student, x.clone())
            try:
                details.append(
                    _compare(
                        f"the output of your {name} for an input {tuple(x.shape)}",
                        out,
                        reference(x),
                    )
                )
            except _Stop as stop:
                raise _Stop(stop.status, f"{stop.detail} (weights copied {how})") from None
    return f"your {name} matches the package's ({'; '.join(details)}; weights copied {how})"


def _inputs(*shapes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g) for s in shapes]


def _seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build()


# ---------------------------------------------------------------------------------------------
# Chapters 2-4: the blocks
# ---------------------------------------------------------------------------------------------
def _lite():
    from ..model import PRESETS

    return PRESETS["lite"]


def check_residual_attention(student_class: type) -> Verdict:
    """Eq. 1: ``student_class(c_in, c_out, trunk_kernel)`` against ``ResidualAttentionBlock``
    (lite preset: ReLU, sigmoid mask, no norm), for a 1x1 and a 3x3 trunk."""
    from ..model import ResidualAttentionBlock

    def body() -> str:
        out = []
        for c_in, c_out, k, shape in [(1, 16, 1, (2, 1, 24, 20)), (16, 16, 3, (1, 16, 17, 16))]:
            ref = _seeded(
                lambda i=c_in, o=c_out, k=k: ResidualAttentionBlock(i, o, _lite(), trunk_kernel=k)
            )
            out.append(
                _check_module(
                    "residual_attention",
                    f"ResidualAttention({c_in}, {c_out}, trunk_kernel={k})",
                    lambda i=c_in, o=c_out, k=k: student_class(i, o, trunk_kernel=k),
                    ref,
                    _inputs(shape),
                )
            )
        return " | ".join(out)

    return _verdict("residual_attention", body)


def check_pyramid_attention(student_class: type) -> Verdict:
    """Eq. 2: ``student_class(c_in, c_out)`` against ``PyramidAttention`` (lite preset)."""
    from ..model import PyramidAttention

    def body() -> str:
        ref = _seeded(lambda: PyramidAttention(48, 16, _lite()))
        return _check_module(
            "pyramid_attention",
            "PyramidAttention(48, 16)",
            lambda: student_class(48, 16),
            ref,
            _inputs((2, 48, 20, 18)),
        )

    return _verdict("pyramid_attention", body)


def check_dilran_block(student_class: type) -> Verdict:
    """Fig. 4: ``student_class(width, dilations)`` against ``DILRANBlock`` (width 16)."""
    from ..model import DILRANBlock

    def body() -> str:
        ref = _seeded(lambda: DILRANBlock(_lite()))
        return _check_module(
            "dilran_block",
            "DILRANBlock(16, (1, 3, 5))",
            lambda: student_class(16, (1, 3, 5)),
            ref,
            _inputs((2, 16, 24, 24)),
        )

    return _verdict("dilran_block", body)


def check_feature_extractor(student_class: type) -> Verdict:
    """Sec. 3.3: ``student_class(width)`` against ``FeatureExtractor`` (lite preset)."""
    from ..model import FeatureExtractor

    def body() -> str:
        ref = _seeded(lambda: FeatureExtractor(_lite()))
        return _check_module(
            "feature_extractor",
            "FeatureExtractor(16)",
            lambda: student_class(16),
            ref,
            _inputs((2, 1, 24, 24)),
        )

    return _verdict("feature_extractor", body)


def check_reconstructor(student_class: type) -> Verdict:
    """Sec. 3.5: ``student_class(width, widths)`` against ``Reconstructor`` (16-16-16-1)."""
    from ..model import Reconstructor

    def body() -> str:
        ref = _seeded(lambda: Reconstructor(_lite()))
        return _check_module(
            "reconstructor",
            "Reconstructor(16, (16, 16))",
            lambda: student_class(16, (16, 16)),
            ref,
            _inputs((2, 16, 20, 24)),
        )

    return _verdict("reconstructor", body)


# ---------------------------------------------------------------------------------------------
# Chapter 5: the loss terms
# ---------------------------------------------------------------------------------------------
def random_vgg_features(seed: int = 0) -> nn.Sequential:
    """VGG16's ``features`` up to relu3_3 with random weights (the ImageNet ones cannot always be
    had offline); the same layers as ``torchvision.models.vgg16().features[:16]``, frozen."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c_in = 3
    for c in (64, 64, "M", 128, 128, "M", 256, 256, 256):
        if c == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = c
    return nn.Sequential(*layers).eval().requires_grad_(False)


def _loss_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 32, 28, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ramp = torch.linspace(0, 1, 24).view(1, 1, 1, 24).expand(1, 1, 24, 24).contiguous()
    return [(y, x), (ramp, ramp.transpose(-1, -2).contiguous()), (x, x.clone())]


def _check_loss(exercise: str, name: str, student_fn: Callable, ref_fn: Callable) -> Verdict:
    def body() -> str:
        details = []
        for out, target in _loss_pairs():
            mine = _run(f"your {name}", student_fn, out.clone(), target.clone())
            details.append(
                _compare(
                    f"your {name} for an output {tuple(out.shape)}",
                    mine,
                    ref_fn(out, target),
                    atol=1e-10,
                    rtol=1e-4,
                )
            )
        return f"your {name} gives the package's values on {len(details)} test pairs"

    return _verdict(exercise, body)


def check_mse(student_fn: Callable) -> Verdict:
    """Eq. 6 / (W H): ``student_fn(output, target)`` against ``losses.mse_term``."""
    from ..losses import mse_term

    return _check_loss("mse", "mse_term", student_fn, mse_term)


def check_gradient(student_fn: Callable) -> Verdict:
    """Eq. 7 / (W H), Sobel: ``student_fn(output, target)`` against ``losses.gradient_term``."""
    from ..losses import gradient_term

    return _check_loss("gradient", "gradient_term", student_fn, gradient_term)


def check_perceptual(student_fn: Callable) -> Verdict:
    """Eq. 8: ``student_fn(output, target, backbone)`` against ``losses.PerceptualLoss`` with the
    same backbone (random VGG16 features: :func:`random_vgg_features`)."""
    from ..losses import PerceptualLoss

    backbone = random_vgg_features()
    ref = PerceptualLoss(backbone=backbone)
    return _check_loss(
        "perceptual",
        "perceptual_term",
        lambda o, t: student_fn(o, t, backbone),
        lambda o, t: ref(o, t),
    )


# ---------------------------------------------------------------------------------------------
# Chapter 6: one training step and the loop
# ---------------------------------------------------------------------------------------------
def _tiny_model(seed: int = 0) -> nn.Module:
    from ..model import DILRAN, ModelConfig

    torch.manual_seed(seed)
    return DILRAN(ModelConfig(width=8, recon_widths=(8, 8)))


def _params_diff(what: str, mine: nn.Module, ref: nn.Module) -> None:
    """All parameters to a tolerance; the message gives the share of weights out of it."""
    pairs = list(zip(mine.named_parameters(), ref.parameters()))
    bad = total = 0
    for (_, p), q in pairs:
        a, b = p.detach().double(), q.detach().double()
        bad += int(((a - b).abs() > 1e-6 + 1e-4 * b.abs()).sum())
        total += a.numel()
    for (name, p), q in pairs:
        try:
            _compare(f"{what}: parameter {name}", p, q, atol=1e-6, rtol=1e-4)
        except _Stop as stop:
            raise _Stop(FAILED, f"{stop.detail}; {bad} of {total} weights in all are out of "
                        "tolerance (a missing opt.zero_grad() or opt.step()?)") from None


def check_train_step(student_fn: Callable) -> Verdict:
    """``student_fn(model, opt, loss_fn, x) -> loss`` against ``train.train_step``: same model,
    same Adam, same batch; the returned loss and every parameter after the step must agree."""
    from ..losses import FusionLoss
    from ..train import train_step

    def body() -> str:
        loss_fn = FusionLoss(lambda2=0.0)
        x = _inputs((2, 1, 24, 24), seed=3)[0]
        mine, ref = _tiny_model(), _tiny_model()
        opt_m = torch.optim.Adam(mine.parameters(), lr=1e-3)
        opt_r = torch.optim.Adam(ref.parameters(), lr=1e-3)
        for step in range(2):
            loss = _run("your train_step", student_fn, mine, opt_m, loss_fn, x.clone())
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                raise _Stop(FAILED, "the loss you return still carries its graph (it keeps "
                            "every activation alive): return loss.detach() or loss.item()")
            expected = train_step(ref, opt_r, loss_fn, x.clone())
            _compare(f"the loss returned by step {step + 1}", loss, expected, atol=1e-6)
            _params_diff(f"after step {step + 1}", mine, ref)
        return "two steps give the package's loss and the package's weights"

    return _verdict("train_step", body)


class _RecordingLoss(nn.Module):
    """Wraps a loss and keeps a copy of every target batch it sees (in training mode)."""

    def __init__(self, loss_fn: nn.Module) -> None:
        super().__init__()
        self.loss_fn, self.batches = loss_fn, []

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.batches.append(target.detach().clone())
        return self.loss_fn(output, target)


def _epoch_ids(batches: list[torch.Tensor], images: torch.Tensor) -> list[int]:
    flat = images.flatten(1)
    ids = []
    for b in batches:
        d = torch.cdist(b.flatten(1).double(), flat.double())
        ids += d.argmin(1).tolist()
    return ids


def check_training_loop(student_fn: Callable) -> Verdict:
    """``student_fn(model, opt, loss_fn, images, epochs, batch_size) -> epoch losses``.

    The loss handed to the loop records every batch; the check then replays those batches through
    the package's ``train_step`` on a copy of the starting model and compares: one loss per
    epoch, each epoch sees every image exactly once in batches of ``batch_size``, each epoch loss
    is the mean over its images, and the final weights equal the replay's.
    """
    from ..losses import FusionLoss
    from ..train import train_step

    def body() -> str:
        images = _inputs((5, 1, 16, 16), seed=4)[0]
        epochs, bs = 2, 2
        mine, ref = _tiny_model(1), _tiny_model(1)
        rec = _RecordingLoss(FusionLoss(lambda2=0.0))
        opt = torch.optim.Adam(mine.parameters(), lr=1e-3)
        losses = _run("your training loop", student_fn, mine, opt, rec, images.clone(), epochs, bs)
        losses = [float(v) for v in _as_tensor(losses, "the returned losses").flatten()]
        if len(losses) != epochs:
            raise _Stop(FAILED, f"your loop returned {len(losses)} losses for {epochs} epochs")
        per_epoch = math.ceil(len(images) / bs)
        if len(rec.batches) != epochs * per_epoch:
            raise _Stop(
                FAILED,
                f"your loop took {len(rec.batches)} steps; {epochs} epochs of "
                f"{len(images)} images in batches of {bs} take {epochs * per_epoch}",
            )
        opt_r = torch.optim.Adam(ref.parameters(), lr=1e-3)
        for e in range(epochs):
            batches = rec.batches[e * per_epoch : (e + 1) * per_epoch]
            sizes = sorted(len(b) for b in batches)
            ids = _epoch_ids(batches, images)
            if sorted(ids) != list(range(len(images))):
                raise _Stop(
                    FAILED,
                    f"epoch {e + 1} saw the images {sorted(ids)} (batch sizes "
                    f"{sizes}); each of the {len(images)} should appear once",
                )
            total = sum(train_step(ref, opt_r, rec.loss_fn, b).item() * len(b) for b in batches)
            _compare(f"the loss of epoch {e + 1}", losses[e], total / len(images), atol=1e-6)
        _params_diff("the weights after your loop", mine, ref)
        return (
            f"{epochs} epochs of {per_epoch} steps: every image once per epoch, the epoch "
            "means and the final weights equal the package's train_step replayed"
        )

    return _verdict("training_loop", body)


# ---------------------------------------------------------------------------------------------
# Chapter 7: SFNN
# ---------------------------------------------------------------------------------------------
def check_sfnn(
    student_fn: Callable, phis: Sequence[str] = ("max", "mean", "max2", "mean2")
) -> Verdict:
    """Eq. 3-5: ``student_fn(f1, f2, phi) -> (w1, w2)``, each (N,), against ``fusion.sfnn_weights``
    (and its per-channel loop ``sfnn_weights_reference``), float64 features (2, 8, 16, 12)."""
    from ..fusion import sfnn_weights, sfnn_weights_reference

    def body() -> str:
        g = torch.Generator().manual_seed(5)
        f1 = torch.randn(2, 8, 16, 12, generator=g, dtype=torch.float64)
        f2 = 1.5 * torch.randn(2, 8, 16, 12, generator=g, dtype=torch.float64)
        for phi in phis:
            out = _run(
                f"your sfnn_weights(f1, f2, {phi!r})", student_fn, f1.clone(), f2.clone(), phi
            )
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise _Stop(
                    FAILED,
                    f"your sfnn_weights must return a pair (w1, w2), got {type(out).__name__}",
                )
            w1, w2 = sfnn_weights(f1, f2, phi)
            r1, _ = sfnn_weights_reference(f1, f2, phi)
            _compare(f"W1 for phi={phi}", out[0], w1, atol=1e-7, rtol=1e-6)
            _compare(f"W1 for phi={phi} (per-channel loop)", out[0], r1, atol=1e-7, rtol=1e-6)
            _compare(f"W2 for phi={phi}", out[1], w2, atol=1e-7, rtol=1e-6)
        return f"W1 and W2 equal the package's for phi in {list(phis)} on 2 pairs"

    return _verdict("sfnn", body)


# ---------------------------------------------------------------------------------------------
# Chapter 8: metrics
# ---------------------------------------------------------------------------------------------
def _metric_images() -> list[np.ndarray]:
    rng = np.random.default_rng(6)
    return [
        rng.integers(0, 256, (32, 32)).astype(np.uint8),
        np.full((16, 16), 77, np.uint8),
        (rng.integers(0, 4, (24, 20)) * 60).astype(np.uint8),
        np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1)),
    ]


def check_entropy(student_fn: Callable) -> Verdict:
    """EN in bits: ``student_fn(f)`` for a uint8 image (H, W) against ``metrics.entropy``."""
    from ..metrics import entropy

    def body() -> str:
        for i, f in enumerate(_metric_images()):
            mine = _run("your entropy", student_fn, f.copy())
            _compare(f"your entropy of test image {i + 1}", mine, entropy(f), atol=1e-9)
        return "your entropy gives the package's value on 4 test images"

    return _verdict("entropy", body)


def check_mutual_information(student_fn: Callable) -> Verdict:
    """MI = MI(F, A) + MI(F, B) in bits: ``student_fn(a, b, f)`` (uint8 images) against
    ``metrics.mutual_information``."""
    from ..metrics import mutual_information

    def body() -> str:
        rng = np.random.default_rng(7)
        a = rng.integers(0, 256, (24, 24)).astype(np.uint8)
        b = (rng.integers(0, 8, (24, 24)) * 32).astype(np.uint8)
        cases = [
            (a, b, ((a.astype(int) + b) // 2).astype(np.uint8)),
            (a, b, a.copy()),
            (b, b, np.full_like(b, 9)),
        ]
        for i, (x, y, f) in enumerate(cases):
            mine = _run("your mutual_information", student_fn, x.copy(), y.copy(), f.copy())
            _compare(f"your MI for test case {i + 1}", mine, mutual_information(x, y, f), atol=1e-9)
        return "your mutual_information gives the package's value on 3 test cases"

    return _verdict("mutual_information", body)


def check_shift_mi(student_fn: Callable) -> Verdict:
    """MI of a slice and its shifted copy as a function of the shift: ``student_fn(fixed,
    moving, shifts)`` (uint8 images, whole-pixel shifts along x) against
    ``registration.shift_mi``."""
    from ..registration import shift_mi

    def body() -> str:
        rng = np.random.default_rng(11)
        a = (rng.integers(0, 16, (20, 30)) * 16).astype(np.uint8)
        b = np.roll(a, 3, axis=1)
        b[:, :3] = 0
        cases = [(a, b, [-4, -1, 0, 2, 3, 5]), (a, a.copy(), [0]), (b, a, [-3, 3])]
        for i, (x, y, shifts) in enumerate(cases):
            mine = _run("your shift_mi", student_fn, x.copy(), y.copy(), list(shifts))
            _compare(f"your MI for test case {i + 1} (shifts {shifts})",
                     np.asarray(mine, dtype=np.float64), shift_mi(x, y, shifts), atol=1e-9)
        return "your shift_mi gives the package's values on 3 test cases"

    return _verdict("shift_mi", body)


# ---------------------------------------------------------------------------------------------
# The list of exercises: what the grader looks for in a hand-in
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exercise:
    """One exercise: the name the student's scaffold defines, its check, chapter and points, and
    the package's own implementation (``module:attr``) that a hand-in must not reuse."""

    id: str
    name: str
    check: str
    chapter: int
    points: int
    reference: str


EXERCISES: tuple[Exercise, ...] = (
    Exercise("residual_attention", "ResidualAttention", "check_residual_attention", 2, 2,
             "model:ResidualAttentionBlock"),
    Exercise("pyramid_attention", "PyramidAttention", "check_pyramid_attention", 3, 2,
             "model:PyramidAttention"),
    Exercise("dilran_block", "DILRANBlock", "check_dilran_block", 3, 2, "model:DILRANBlock"),
    Exercise("feature_extractor", "FeatureExtractor", "check_feature_extractor", 4, 1,
             "model:FeatureExtractor"),
    Exercise("reconstructor", "Reconstructor", "check_reconstructor", 4, 1, "model:Reconstructor"),
    Exercise("mse", "mse_term", "check_mse", 5, 1, "losses:mse_term"),
    Exercise("gradient", "gradient_term", "check_gradient", 5, 2, "losses:gradient_term"),
    Exercise("perceptual", "perceptual_term", "check_perceptual", 5, 2, "losses:PerceptualLoss"),
    Exercise("train_step", "my_train_step", "check_train_step", 6, 2, "train:train_step"),
    Exercise("training_loop", "fit", "check_training_loop", 6, 3, "train:train_step"),
    Exercise("sfnn", "my_sfnn_weights", "check_sfnn", 7, 3, "fusion:sfnn_weights"),
    Exercise("entropy", "my_entropy", "check_entropy", 8, 1, "metrics:entropy"),
    Exercise("mutual_information", "my_mutual_information", "check_mutual_information", 8, 2,
             "metrics:mutual_information"),
    Exercise("shift_mi", "my_shift_mi", "check_shift_mi", 12, 2, "registration:shift_mi"),
)
