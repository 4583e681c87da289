"""The fixed facts the results are read against: the paper's own Tables 1-3, the released code's
numbers measured under the field's definitions, and the constants of the experiment plan
(strategies, metrics, which shipped weights). No computation here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import UserError

__all__ = [
    "STRATEGY_ORDER",
    "PAPER_STRATEGY",
    "QUICK_METRICS",
    "SELECTION_METRICS",
    "WEIGHTS",
    "DEFAULT_TRAIN_SPLIT",
    "RELEASED_SOURCE",
    "RELEASED_MEASURED",
    "PAPER_COLUMNS",
    "PAPER_TABLES",
    "PAPER_TABLES_SOURCE",
    "PAPER_TABLES_NOTE",
    "PERCEPTUAL_NOTE",
    "METRIC_CONVENTIONS",
    "shipped_results",
]

STRATEGY_ORDER = [
    "fer",
    "fl1n",
    "sfnn-mean",
    "sfnn-max",
    "sfnn-sum",
    "sfnn-mean2",
    "sfnn-max2",
    "sfnn-sum2",
    "sfnn-spatial",
]
"""The rows of Table 1: the paper's eight strategies and this project's per-pixel extension."""

PAPER_STRATEGY = "sfnn-max"
"""The strategy the paper settles on (Sec. 4.4)."""

QUICK_METRICS = ["PSNR", "SSIM", "MI", "EN", "SD", "SF", "AG", "SCD", "VIF", "Qabf"]
"""The metrics of ``--quick``: every metric but FMI and FSIM, which cost ~2 s per image."""

SELECTION_METRICS = ["PSNR", "SSIM", "MI", "SCD", "VIF", "Qabf"]
"""The best variant maximises the mean rank over these on the validation pairs: scores that
compare the fused image with both sources (fidelity), cheap to compute; no-reference statistics
(EN, SD, SF, AG) are left out because noise raises them."""

WEIGHTS = {
    "paper": "dilran-paper",
    "paper_affine": "dilran-paper-affine",
    "paper_mse": "dilran-paper-mse",
    "lite": "dilran-lite",
    "mse": "dilran-lite-mse",
    "paper_paper_split": "dilran-paper-paper-split",
    "paper_affine_paper_split": "dilran-paper-affine-paper-split",
    "paper_mse_paper_split": "dilran-paper-mse-paper-split",
    "lite_paper_split": "dilran-lite-paper-split",
    "mse_paper_split": "dilran-lite-mse-paper-split",
}
"""The shipped weights used here (see :mod:`dilran_lite.pretrained`); ``*_paper_split`` ones were
trained on the ``paper`` split's training part, the others on the ``series`` split's."""

DEFAULT_TRAIN_SPLIT = {
    w: "paper" if k.endswith("paper_split") else "series" for k, w in WEIGHTS.items()
}
"""Weights name -> the split scheme it was trained on, for sidecars that do not record it."""

RELEASED_SOURCE = (
    "quoted: released code, measured (appendix), weights of Zhou et al. (model_v5.py + last.pt) "
    "scored with the field's definitions (8-bit, 256 bins, bits, MI = MI(F,CT) + MI(F,MRI))"
)
RELEASED_MEASURED = [
    dict(
        split="series",
        method="published DILRAN, SFNN max",
        n_pairs=41,
        PSNR=15.68,
        EN=4.22,
        MI=3.68,
    ),
    dict(
        split="series",
        method="published DILRAN, SFNN max^2",
        n_pairs=41,
        PSNR=17.04,
        EN=4.17,
        MI=3.83,
    ),
    dict(split="series", method="pixel average (quoted)", n_pairs=41, PSNR=15.19, EN=3.96, MI=3.45),
    dict(
        split="paper", method="published DILRAN, SFNN max", n_pairs=20, PSNR=16.16, EN=4.00, MI=3.64
    ),
    dict(split="paper", method="pixel average (quoted)", n_pairs=20, PSNR=15.70, EN=3.75, MI=3.46),
]
"""The numbers to beat: the authors' released weights (``model_v5.py`` + ``pretrained/last.pt``)
run on our splits and scored under the field's definitions (the appendix of the book)."""

PAPER_COLUMNS = ["PSNR", "SSIM", "MI", "FMI-pixel", "FSIM", "Entropy"]
"""The columns of the paper's Tables 1-3, in its order."""

PAPER_TABLES = {
    "Table 1": {
        "FER": [13.944, 0.736, 4.551, 0.876, 0.806, 8.720],
        "FL1N": [15.979, 0.739, 4.569, 0.878, 0.813, 9.782],
        "SFNN (mean)": [15.876, 0.740, 4.578, 0.876, 0.812, 9.772],
        "SFNN (mean^2)": [16.311, 0.741, 4.567, 0.883, 0.819, 9.812],
        "SFNN (max)": [16.413, 0.740, 4.558, 0.891, 0.820, 9.816],
        "SFNN (max^2)": [18.258, 0.740, 4.451, 0.891, 0.829, 9.887],
        "SFNN (sum)": [15.876, 0.740, 4.578, 0.876, 0.812, 9.772],
        "SFNN (sum^2)": [16.311, 0.740, 4.578, 0.876, 0.819, 9.812],
    },
    "Table 2": {
        "Zero-shot": [13.525, 0.681, 4.633, 0.836, 0.738, 4.279],
        "MSDRA": [15.693, 0.697, 4.586, 0.867, 0.797, 8.167],
        "MSRPAN": [14.528, 0.741, 4.652, 0.874, 0.808, 8.969],
        "Ours (DILRAN, SFNN max)": [16.413, 0.740, 4.558, 0.891, 0.820, 9.816],
    },
    "Table 3": {
        "Only MSE": [16.519, 0.739, 4.428, 0.890, 0.820, 8.72],
        "All loss": [16.413, 0.740, 4.558, 0.891, 0.820, 9.816],
    },
}
"""The paper's own Tables 1-3 (paper split, its own metric code): NOT comparable with ours.
Its EN exceeds 8 bits (entropy of distinct float values), its MI comes from a buggy joint
entropy, its "FMI-pixel" used edge features, and BatchNorm stayed in training mode (measured on
the released code)."""

PAPER_TABLES_SOURCE = "arXiv 2212.04661 (paper split, the authors' metric code): not comparable"

PAPER_TABLES_NOTE = (
    "reference_paper_tables.csv: the paper's own values (its metric code, paper split, "
    "BatchNorm in train mode); not comparable with these tables: EN over 8 bits is "
    "impossible for 8-bit images, the MI code has a joint-entropy bug, FMI-pixel used "
    "edge features."
)

PERCEPTUAL_NOTE = (
    "perceptual loss (Eq. 8) not used by any model: ImageNet VGG16 weights were not available "
    "offline, so lambda2 = 0 everywhere"
)

METRIC_CONVENTIONS = (
    "dilran_lite.metrics: every image quantised to 8 bits (round(x*255)); "
    "256 bins; information in bits; PSNR, SSIM with data_range = 1.0 on [0, 1]; pair "
    "value = average of the two sources for PSNR, SSIM, FMI, FSIM; sum for MI, VIF, SCD"
)


def shipped_results(name: str = "") -> Path:
    """The path of a result file shipped inside the package (``""``: the folder itself).

    ``name`` is relative to ``dilran_lite/results``: ``"table1_series.csv"``, ``"summary.json"``,
    ``"fusion_grid_series.png"``, ``"benchmarks/speed.json"``... They were written by
    ``python -m dilran_lite.experiments --out dilran_lite/results`` (full run, atlas, shipped
    weights) and ``python -m benchmarks.run``; an installed wheel has them, no checkout needed.
    """
    path = Path(str(resources.files("dilran_lite").joinpath("results", *Path(name).parts)))
    if not path.exists():
        raise UserError(
            f"{name!r} is not among the shipped results ({path.parent}): "
            f"choose one of {sorted(p.name for p in path.parent.glob('*'))}"
        )
    return path
