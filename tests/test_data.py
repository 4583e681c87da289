"""Paired datasets: reading, pairing checks, splits, augmentation, root resolution, fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dilran_lite import data
from dilran_lite.augment import augment_images
from dilran_lite.augment import augment_pair as augment_pair_from_augment
from dilran_lite.data import (
    PAIRS,
    PairedDataset,
    PhantomDataset,
    SingleImageDataset,
    augment_pair,
    dataset_dir,
    load_image,
    load_pairs,
    load_splits,
    resolve_data_root,
    series_of,
)


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


def _gray(h=16, w=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _make_ct_folder(root: Path, names=("1001.png", "1002.png", "2001.png")) -> Path:
    for i, n in enumerate(names):
        _png(root / "MRI" / n, _gray(seed=i))
        _png(root / "CT" / n, _gray(seed=100 + i))
    return root


# --- reading images ---------------------------------------------------------------------------


def test_load_image_8bit_16bit_rgb(tmp_path):
    g = _gray(8, 10)
    x = load_image(_png(tmp_path / "g.png", g))
    assert x.shape == (1, 8, 10) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.from_numpy(g).float() / 255)
    g16 = np.array([[0, 32768, 65535]], dtype=np.uint16).repeat(4, 0)
    x16 = load_image(_png(tmp_path / "g16.png", g16))
    assert x16.shape == (1, 4, 3)
    assert torch.allclose(x16[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    xr = load_image(_png(tmp_path / "c.png", rgb), mode="RGB")
    assert xr.shape == (3, 8, 8)
    assert torch.allclose(xr, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    # grayscale read as RGB is repeated; an RGB file with equal channels is read as grayscale
    assert load_image(tmp_path / "g.png", mode="RGB").shape == (3, 8, 10)
    _png(tmp_path / "grey_rgb.png", np.stack([g, g, g], -1))
    assert torch.equal(load_image(tmp_path / "grey_rgb.png"), x)


def test_load_image_errors_name_the_file(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    colour = _png(tmp_path / "colour.png", rgb)
    with pytest.raises(ValueError, match="colour.png is a colour image"):
        load_image(colour, mode="L")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="junk.png"):
        load_image(junk)
    full = _png(tmp_path / "full.png", _gray(64, 64)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="cut.png.*truncated"):
        load_image(cut)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


# --- pairing checks on broken folders ---------------------------------------------------------


def test_paired_dataset_on_good_folder(tmp_path):
    root = _make_ct_folder(tmp_path / "harvard-mri-ct")
    for r in (root, tmp_path):  # the dataset folder itself, or its parent data root
        ds = PairedDataset(r)
        assert ds.root == root and ds.modalities == ("MRI", "CT")
        assert ds.names == ["1001.png", "1002.png", "2001.png"]
        a, b, name = ds[0]
        assert name == "1001.png" and a.shape == b.shape == (1, 16, 16)
        assert torch.allclose(a[0], torch.from_numpy(_gray(seed=0)).float() / 255)
        assert "3 pairs" in ds.source and str(root) not in ds.source  # no machine paths
    assert PairedDataset(root, names=["1002"]).names == ["1002.png"]


def test_name_in_one_modality_only(tmp_path):
    root = _make_ct_folder(tmp_path)
    _png(root / "CT" / "3001.png", _gray())
    with pytest.raises(ValueError, match=r"CT/ have no partner in MRI/.*3001\.png"):
        PairedDataset(root)


def test_sizes_differ_within_a_pair(tmp_path):
    root = _make_ct_folder(tmp_path)
    _png(root / "CT" / "1002.png", _gray(16, 20))
    with pytest.raises(ValueError, match=r"pair 1002\.png: sizes differ.*CT/1002\.png"):
        PairedDataset(root)


def test_truncated_and_unreadable_files(tmp_path):
    root = _make_ct_folder(tmp_path)
    full = (root / "MRI" / "2001.png").read_bytes()
    (root / "MRI" / "2001.png").write_bytes(full[: len(full) - 30])  # pixel data cut short
    ds = PairedDataset(root)  # header is intact: detected when the pair is read
    with pytest.raises(ValueError, match=r"MRI/2001\.png.*truncated"):
        ds[2]
    (root / "CT" / "1001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"CT/1001\.png"):
        PairedDataset(root)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "MRI").mkdir()
    (tmp_path / "CT").mkdir()
    with pytest.raises(ValueError, match="empty"):
        PairedDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="dilran-lite download"):
        PairedDataset(tmp_path / "nowhere")


def test_colour_image_where_grayscale_expected(tmp_path):
    root = _make_ct_folder(tmp_path)
    rgb = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    _png(root / "CT" / "1001.png", rgb)
    with pytest.raises(ValueError, match=r"CT/1001\.png is a colour image"):
        PairedDataset(root)[0]


def test_split_names_must_exist(tmp_path):
    root = _make_ct_folder(tmp_path)
    (root / "splits.json").write_text(json.dumps({"series": {"test": ["1001.png", "9009.png"]}}))
    with pytest.raises(FileNotFoundError, match="9009.png"):
        PairedDataset(root, split="series/test")
    with pytest.raises(ValueError, match="scheme"):
        PairedDataset(root, split="bogus/test")


# --- the real atlas ---------------------------------------------------------------------------


def test_atlas_split_datasets(atlas_root):
    ds = PairedDataset(atlas_root, split="series/test")
    assert len(ds) == 41 and ds.split == "series/test"
    assert ds.source.endswith("split series/test, 41 pairs)")
    a, b, name = ds[0]
    assert a.shape == b.shape == (1, 256, 256) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0 and float(b.max()) > 0.5
    assert len(PairedDataset(atlas_root.parent, split="paper/test")) == 20
    assert len(PairedDataset(atlas_root)) == 184


def test_colour_atlas_pairs(pet_root, spect_root):
    for root, pairs in ((pet_root, "mri-pet"), (spect_root, "mri-spect")):
        ds = PairedDataset(root, pairs=pairs, split="series/test")
        a, b, _ = ds[0]
        assert a.shape == (1, 256, 256) and b.shape == (3, 256, 256)
        assert ds.modalities == PAIRS[pairs]


@pytest.mark.parametrize("pairs", list(PAIRS))
def test_splits_have_no_overlap_and_no_shared_series(shared_data, pairs):
    splits = load_splits(pairs, shared_data)
    folder = dataset_dir(pairs, shared_data)
    all_names = {p.name for p in (folder / "MRI").glob("*.png")}
    schemes = ["paper", "series"] if pairs == "mri-ct" else ["series"]
    for scheme in schemes:
        parts = splits[scheme]
        assert set(parts) == {"train", "val", "test"}
        sets = {k: set(v) for k, v in parts.items()}
        assert sum(len(v) for v in parts.values()) == len(all_names)
        assert set().union(*sets.values()) == all_names
        for x in sets:
            for y in sets:
                if x < y:
                    assert not sets[x] & sets[y], (scheme, x, y)
    series = {k: {series_of(n) for n in v} for k, v in splits["series"].items()}
    assert not series["train"] & series["val"]
    assert not series["train"] & series["test"]
    assert not series["val"] & series["test"]
    if pairs == "mri-ct":
        assert series["test"] == {"34", "41"} and series["val"] == {"20"}


def test_splits_fall_back_to_shipped_manifest(tmp_path, atlas_root):
    root = _make_ct_folder(tmp_path / "harvard-mri-ct")
    shipped = load_splits("mri-ct", root)
    assert shipped["series"]["test"] == load_splits("mri-ct", atlas_root)["series"]["test"]


def test_series_of():
    assert series_of("34002.png") == "34" and series_of("2004.png") == "2"
    with pytest.raises(ValueError):
        series_of("ab.png")


# --- augmentation -----------------------------------------------------------------------------


def test_augment_pair_is_identical_on_both_images():
    a = torch.rand(1, 12, 10)
    b = torch.cat([a, 0.5 * a, 1 - a])  # a 3-channel partner derived pixel by pixel from a
    seen = set()
    for s in range(40):
        g = torch.Generator().manual_seed(s)
        x, y = augment_pair(a, b, g)
        assert torch.equal(y[0], x[0]) and torch.allclose(y[1], 0.5 * x[0])
        assert torch.allclose(y[2], 1 - x[0])
        seen.add(tuple(x.shape))
        x, y = augment_pair(a, b, g, crop=6)
        assert x.shape == (1, 6, 6) and y.shape == (3, 6, 6) and torch.equal(y[0], x[0])
    assert seen == {(1, 12, 10), (1, 10, 12)}  # rot90 happened, and not always
    x, _ = augment_pair(a, b, torch.Generator().manual_seed(0), crop=4, flips=False)
    assert torch.equal(x, a[:, 4:8, 3:7])  # centre crop only
    with pytest.raises(ValueError, match="crop"):
        augment_pair(a, b, None, crop=20)
    with pytest.raises(ValueError, match="differ in size"):
        augment_pair(a, torch.rand(1, 12, 11), None)


def test_augment_images_moves_every_image_alike():
    x = torch.arange(60.0).reshape(1, 6, 10)
    for s in range(8):
        out = augment_images([x, x + 1, 2 * x], torch.Generator().manual_seed(s), crop=5)
        assert out[0].shape == (1, 5, 5)
        assert torch.equal(out[1], out[0] + 1) and torch.equal(out[2], 2 * out[0])
    assert data.augment_pair is augment_pair_from_augment  # the re-export of the one function


def test_augmented_dataset_is_deterministic_per_seed(tmp_path):
    root = _make_ct_folder(tmp_path)
    d1 = PairedDataset(root, augment=True, crop=8, seed=3)
    d2 = PairedDataset(root, augment=True, crop=8, seed=3)
    x1, y1, _ = d1[1]
    x2, y2, _ = d2[1]
    assert x1.shape == (1, 8, 8) and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_single_image_dataset(tmp_path, pet_root):
    root = _make_ct_folder(tmp_path)
    ds = SingleImageDataset(PairedDataset(root))
    assert len(ds) == 6
    assert torch.equal(ds[0], PairedDataset(root)[0][0])
    assert torch.equal(ds[1], PairedDataset(root)[0][1])
    assert SingleImageDataset(root, augment=True, crop=8)[3].shape == (1, 8, 8)
    pet = SingleImageDataset(pet_root, pairs="mri-pet", names=["25015.png"])
    assert pet[1].shape == (1, 256, 256)  # PET as its Y channel
    assert len(SingleImageDataset(PhantomDataset(n=2, size=64))) == 4


# --- where the data lives, and the phantom fallback -------------------------------------------


def test_resolve_data_root(tmp_path, monkeypatch):
    assert resolve_data_root(tmp_path) == tmp_path
    monkeypatch.setenv("DILRAN_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.setenv("DILRAN_DATA", "")
    assert resolve_data_root() == Path(data.__file__).resolve().parents[1] / "data"
    monkeypatch.setattr(data, "_REPO", tmp_path / "site-packages")  # as if installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_root() == tmp_path / "cache" / "dilran-lite"
    assert dataset_dir("mri-pet", tmp_path) == tmp_path / "harvard-mri-pet"
    with pytest.raises(ValueError, match="unknown pairs"):
        dataset_dir("mri-xray", tmp_path)


def test_load_pairs_uses_atlas_when_present(shared_data):
    ds = load_pairs("mri-ct", split="series/test", root=shared_data)
    assert isinstance(ds, PairedDataset) and len(ds) == 41


def test_load_pairs_falls_back_to_phantom(tmp_path, capsys):
    ds = load_pairs("mri-ct", split="series/test", root=tmp_path, n_phantom=3)
    out = capsys.readouterr().out
    assert isinstance(ds, PhantomDataset) and len(ds) == 3
    assert out.count("\n") == 1 and "not found" in out and "dilran-lite download" in out
    assert "phantom" in out
    train = load_pairs("mri-ct", split="series/train", root=tmp_path, n_phantom=3)
    assert not torch.equal(ds[0][0], train[0][0])  # test and train phantoms differ
    pet = load_pairs("mri-pet", root=tmp_path, n_phantom=2)
    assert pet[0][1].shape[0] == 3
    with pytest.raises(FileNotFoundError, match="download"):
        load_pairs("mri-ct", root=tmp_path, fallback=None)


def test_series_and_slice_of_names():
    from dilran_lite.data import series_of, slice_of

    assert (series_of("34002.png"), slice_of("34002.png")) == ("34", 2)
    assert (series_of("2004.png"), slice_of("2004.png")) == ("2", 4)
    with pytest.raises(ValueError, match="not SNNN.png"):
        slice_of("ab.png")
