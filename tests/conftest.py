"""Shared fixtures. The atlas is read from ../shared/data beside the checkout (CI has it there);
tests that need it are skipped with a clear reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# `make test NO_ATLAS=1` (DILRAN_NO_SHARED=1): test as a clean clone, as if ../shared were absent.
if os.environ.get("DILRAN_NO_SHARED", "").strip() not in {"", "0"}:
    SHARED_DATA = REPO / "_build" / "DILRAN_NO_SHARED"

if SHARED_DATA.is_dir():
    os.environ.setdefault("DILRAN_DATA", str(SHARED_DATA))


def _dataset_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found: the atlas pairs live in ../shared/data beside the checkout")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding harvard-mri-ct, harvard-mri-pet and harvard-mri-spect."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def atlas_root() -> Path:
    """../shared/data/harvard-mri-ct: 184 MRI-CT pairs, splits.json, sha256.json."""
    return _dataset_dir("harvard-mri-ct")


@pytest.fixture(scope="session")
def pet_root() -> Path:
    return _dataset_dir("harvard-mri-pet")


@pytest.fixture(scope="session")
def spect_root() -> Path:
    return _dataset_dir("harvard-mri-spect")
