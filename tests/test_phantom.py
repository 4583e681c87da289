"""The synthetic phantom: deterministic, co-registered, with the contrasts fusion needs."""

from __future__ import annotations

import pytest
import torch

from dilran_lite.augment import augment_pair
from dilran_lite.phantom import (
    TISSUES,
    PhantomDataset,
    phantom_functional,
    phantom_masks,
    phantom_pair,
)


def _mean(img: torch.Tensor, mask: torch.Tensor) -> float:
    assert mask.any()
    return float(img[0][mask].mean())


def test_deterministic_per_seed_and_different_across_seeds():
    a = phantom_pair(7, 128)
    b = phantom_pair(7, 128)
    c = phantom_pair(8, 128)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(phantom_functional(7, 128), phantom_functional(7, 128))


def test_shapes_dtype_range():
    mri, ct = phantom_pair(0, 96)
    for x in (mri, ct):
        assert x.shape == (1, 96, 96) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    pet = phantom_functional(0, 96)
    assert pet.shape == (3, 96, 96) and 0.0 <= float(pet.min()) and float(pet.max()) <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_contrasts(seed):
    mri, ct, m = phantom_pair(seed, 256, return_masks=True)
    # skull: bright in CT, dark in MRI
    assert _mean(ct, m["skull"]) > 0.8
    assert _mean(mri, m["skull"]) < 0.2
    # CSF and ventricles: bright in (T2-like) MRI, dark in CT
    assert _mean(mri, m["csf"]) > 0.7 and _mean(ct, m["csf"]) < 0.2
    assert _mean(mri, m["ventricles"]) > 0.7 and _mean(ct, m["ventricles"]) < 0.2
    # grey/white contrast in MRI only
    assert _mean(mri, m["grey"]) - _mean(mri, m["white"]) > 0.15
    assert abs(_mean(ct, m["grey"]) - _mean(ct, m["white"])) < 0.02
    # lesion visible in MRI only
    assert _mean(mri, m["lesion"]) - _mean(mri, m["white"]) > 0.3
    assert abs(_mean(ct, m["lesion"]) - _mean(ct, m["white"])) < 0.02
    # background is empty in both
    assert _mean(mri, ~m["head"]) < 0.02 and _mean(ct, ~m["head"]) < 0.02


def test_masks_are_disjoint_and_cover_the_head():
    m = phantom_masks(3, 128)
    stack = torch.stack([m[t] for t in TISSUES]).int()
    assert int(stack.sum(0).max()) == 1
    assert torch.equal(stack.sum(0).bool(), m["head"])
    assert bool((m["ventricles"] & ~m["csf"]).sum() == 0)
    assert int(m["lesion"].sum()) > 10


def test_functional_image_is_hot_in_grey_matter_and_lesion():
    _, _, m = phantom_pair(2, 256, return_masks=True)
    pet = phantom_functional(2, 256)
    heat = pet.sum(0)  # 'hot' colour map: R, then G, then B rise with uptake
    assert float(heat[m["grey"]].mean()) > float(heat[m["white"]].mean()) + 0.5
    assert float(heat[m["lesion"]].mean()) > float(heat[m["white"]].mean()) + 0.5
    assert float(heat[m["skull"]].mean()) < 1.0


def test_phantom_dataset():
    ds = PhantomDataset(n=3, size=64, seed=10)
    assert len(ds) == 3 and ds.names == ["phantom_0010", "phantom_0011", "phantom_0012"]
    assert ds.source.startswith("synthetic phantom (")
    a, b, name = ds[1]
    assert name == "phantom_0011" and a.shape == b.shape == (1, 64, 64)
    assert torch.equal(a, phantom_pair(11, 64)[0])
    a, b, _ = PhantomDataset(n=2, size=64, modality="PET")[0]
    assert a.shape == (1, 64, 64) and b.shape == (3, 64, 64)
    aug = PhantomDataset(n=2, size=64, augment=True, crop=32)
    x, y, _ = aug[0]
    assert x.shape == y.shape == (1, 32, 32)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="size"):
        phantom_pair(0, 8)


def test_phantom_augmentation_is_augment_pair_with_the_dataset_seed():
    """PhantomDataset augments with dilran_lite.augment (phantom does not import data)."""
    a, b, _ = PhantomDataset(n=1, size=64, seed=5)[0]
    want = augment_pair(a, b, torch.Generator().manual_seed(5), crop=32)
    x, y, _ = PhantomDataset(n=1, size=64, seed=5, augment=True, crop=32)[0]
    assert torch.equal(x, want[0]) and torch.equal(y, want[1])
    assert not torch.equal(x, a[:, 16:48, 16:48])  # not a plain centre crop
