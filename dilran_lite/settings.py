"""The one reader of the environment: every ``DILRAN_*`` variable the package honours.

=====================  =========================================================================
``DILRAN_QUICK``       1: quick mode (small, fast runs: CI, CPUs, impatient readers);
                       unset: a chapter's setup picks quick mode without a GPU, else full
``DILRAN_SOLUTIONS``   1: the notebooks' solution cells run (the exercise checks' own tests)
``DILRAN_DATA``        the data root (the folder that holds ``harvard-mri-ct/`` ...)
``DILRAN_FETCH``       0: notebooks never download the atlas (they use the phantom)
``DILRAN_MIRROR``      a base URL (or ``file://`` folder) to download the atlas from
``DILRAN_GIT_COMMIT``  the commit recorded in results made from a copy without ``.git``
``XDG_CACHE_HOME``     the user cache folder (default ``~/.cache``)
=====================  =========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "QUICK_VAR",
    "SOLUTIONS_VAR",
    "DATA_VAR",
    "FETCH_VAR",
    "MIRROR_VAR",
    "GIT_COMMIT_VAR",
    "flag",
    "quick_mode",
    "quick_mode_chosen",
    "choose_quick_mode",
    "solutions_enabled",
    "data_root_override",
    "fetch_allowed",
    "mirror",
    "git_commit_override",
    "cache_dir",
]

QUICK_VAR = "DILRAN_QUICK"
SOLUTIONS_VAR = "DILRAN_SOLUTIONS"
DATA_VAR = "DILRAN_DATA"
FETCH_VAR = "DILRAN_FETCH"
MIRROR_VAR = "DILRAN_MIRROR"
GIT_COMMIT_VAR = "DILRAN_GIT_COMMIT"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _get(name: str) -> str:
    return os.environ.get(name, "").strip()


def flag(name: str, default: bool = False) -> bool:
    """The variable ``name`` read as a yes/no switch (1/true/yes/on, 0/false/no/off)."""
    value = _get(name).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return default


def quick_mode() -> bool:
    """True when ``DILRAN_QUICK`` is set to a true value.

    Notebooks and examples read it to shrink their work (fewer steps, smaller crops) so that
    continuous integration can run every chapter on two CPU cores.
    """
    return flag(QUICK_VAR)


def quick_mode_chosen() -> bool:
    """True when ``DILRAN_QUICK`` holds a yes/no value (the reader chose a mode)."""
    return _get(QUICK_VAR).lower() in _TRUE | _FALSE


def choose_quick_mode(quick: bool) -> None:
    """Set ``DILRAN_QUICK`` for this process (what :func:`quick_mode` reads from now on)."""
    os.environ[QUICK_VAR] = "1" if quick else "0"


def solutions_enabled() -> bool:
    """True when ``DILRAN_SOLUTIONS`` is 1 / true / yes: the notebooks' solution cells run
    (so "Run all" leaves the scaffolds alone)."""
    return flag(SOLUTIONS_VAR)


def data_root_override() -> Path | None:
    """``$DILRAN_DATA`` as a path, or None when unset or empty."""
    value = _get(DATA_VAR)
    return Path(value).expanduser() if value else None


def fetch_allowed() -> bool:
    """False when ``DILRAN_FETCH`` is 0 / false / no / off: notebooks do not download."""
    return flag(FETCH_VAR, default=True)


def mirror() -> str | None:
    """``$DILRAN_MIRROR`` (a base URL to download the atlas from), or None."""
    return _get(MIRROR_VAR) or None


def git_commit_override() -> str | None:
    """``$DILRAN_GIT_COMMIT``, or None."""
    return _get(GIT_COMMIT_VAR) or None


def cache_dir() -> Path:
    """The package's user cache folder: ``$XDG_CACHE_HOME/dilran-lite`` or
    ``~/.cache/dilran-lite``."""
    base = _get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "dilran-lite"
