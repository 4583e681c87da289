"""The build-it-yourself exercises of chapters 2-8: their checks and the grader of hand-ins.

``from dilran_lite.exercises import check_mse`` (and the other checks) is what the notebooks use;
``python -m dilran_lite.exercises grade FOLDER --csv FILE`` grades a class (it executes the
students' code: see :mod:`dilran_lite.exercises.grader`).
"""

from .checks import (
    EXERCISES,
    FAILED,
    NOT_DONE,
    PASSED,
    Exercise,
    Verdict,
    check_dilran_block,
    check_entropy,
    check_feature_extractor,
    check_gradient,
    check_mse,
    check_mutual_information,
    check_perceptual,
    check_pyramid_attention,
    check_reconstructor,
    check_residual_attention,
    check_sfnn,
    check_shift_mi,
    check_train_step,
    check_training_loop,
    random_vgg_features,
    solutions_enabled,
)
from .grader import grade, main

__all__ = [
    "EXERCISES",
    "Exercise",
    "FAILED",
    "NOT_DONE",
    "PASSED",
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
    "grade",
    "main",
]
