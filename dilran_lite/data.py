"""Paired multimodal images: the Harvard atlas folders, their splits, augmentation, and the
phantom fallback that every notebook uses when the atlas is not on this machine.

Layout of one dataset folder (e.g. ``harvard-mri-ct``)::

    <data root>/harvard-mri-ct/MRI/<NAME>.png
    <data root>/harvard-mri-ct/CT/<NAME>.png      # same NAME = one co-registered pair
    <data root>/harvard-mri-ct/splits.json        # {"paper": {"train": [...], ...}, "series": ...}

Where the data root is: see :func:`resolve_data_root`. Colour helpers live in
:mod:`dilran_lite.color`, the phantom in :mod:`dilran_lite.phantom`, the paired augmentation in
:mod:`dilran_lite.augment`; all are re-exported here.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .augment import Augmenter, augment_images, augment_pair
from .color import fuse_colour, rgb_to_luma, rgb_to_ycbcr, ycbcr_to_rgb
from .errors import ImageFileError, MissingImageError, SplitFileError
from .phantom import PhantomDataset, phantom_functional, phantom_masks, phantom_pair
from .settings import DATA_VAR, cache_dir, data_root_override
from .utils import display_path

__all__ = [
    "ImageFileError",
    "MissingImageError",
    "SplitFileError",
    "PAIRS",
    "DATASET_DIRS",
    "resolve_data_root",
    "dataset_dir",
    "load_image",
    "image_size",
    "is_dataset_folder",
    "BIT_DEPTHS",
    "bits_used",
    "load_splits",
    "split_names",
    "series_of",
    "slice_of",
    "augment_pair",
    "PairedDataset",
    "SingleImageDataset",
    "load_pairs",
    "QUICK_COLOUR_PAIRS",
    "quick_names",
    "PhantomDataset",
    "phantom_pair",
    "phantom_masks",
    "phantom_functional",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "rgb_to_luma",
    "fuse_colour",
]

PAIRS = {"mri-ct": ("MRI", "CT"), "mri-pet": ("MRI", "PET"), "mri-spect": ("MRI", "SPECT")}
DATASET_DIRS = {
    "mri-ct": "harvard-mri-ct",
    "mri-pet": "harvard-mri-pet",
    "mri-spect": "harvard-mri-spect",
}
ENV_VAR = DATA_VAR
IMAGE_SUFFIX = ".png"
_REPO = Path(__file__).resolve().parents[1]


def _check_pairs(pairs: str) -> str:
    key = str(pairs).lower()
    if key not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    return key


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that contains ``harvard-mri-ct/`` etc.

    Order: the ``root`` argument; else ``$DILRAN_DATA`` (ignored when empty); else ``data/`` in
    the repository when the package runs from a checkout; else the user cache folder
    (``$XDG_CACHE_HOME/dilran-lite`` or ``~/.cache/dilran-lite``). The folder may not exist yet.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = data_root_override()
    if env is not None:
        return env
    if (_REPO / "pyproject.toml").is_file() and (_REPO / "dilran_lite").is_dir():
        return _REPO / "data"
    return cache_dir()


def is_dataset_folder(path: str | os.PathLike, pairs: str = "mri-ct") -> bool:
    """Whether ``path`` holds the two modality folders of ``pairs`` (e.g. ``MRI/`` and ``CT/``)."""
    return all((Path(path) / m).is_dir() for m in PAIRS[_check_pairs(pairs)])


#: The former private name of :func:`is_dataset_folder`, kept for modules that still import it.
_is_dataset_folder = is_dataset_folder


def dataset_dir(pairs: str = "mri-ct", root: str | os.PathLike | None = None) -> Path:
    """The dataset folder for ``pairs`` (e.g. ``<data root>/harvard-mri-ct``).

    ``root`` may be the data root or the dataset folder itself (one holding ``MRI/`` and the
    other modality's folder). The returned folder may not exist.
    """
    pairs = _check_pairs(pairs)
    base = resolve_data_root(root)
    if is_dataset_folder(base, pairs):
        return base
    return base / DATASET_DIRS[pairs]


#: Bit depths a 16-bit file is read at when its values use fewer bits: DICOM's usual "bits
#: stored" (a CT exported as 16-bit PNG or TIFF often holds 12-bit values, 0..4095).
BIT_DEPTHS = (8, 10, 12, 14, 16)


def bits_used(peak: int) -> int:
    """The smallest bit depth of :data:`BIT_DEPTHS` that holds the value ``peak`` (>= 0)."""
    for bits in BIT_DEPTHS:
        if peak < 2**bits:
            return bits
    raise ValueError(f"value {peak} does not fit in 16 bits")


def _wide_scale(arr: np.ndarray, path: Path, bits: int | None) -> float:
    """The divisor of a 16-bit image: ``2**bits - 1``, ``bits`` by default :func:`bits_used`
    of its brightest value; fewer than 16 found bits are reported with a warning naming the file."""
    peak = int(arr.max()) if arr.size else 0
    if bits is not None:
        if peak >= 2**bits:
            raise ImageFileError(f"{path}: value {peak} does not fit in bits={bits}")
        return float(2**bits - 1)
    bits = bits_used(peak)
    if bits < 16 and peak > 0:
        warnings.warn(
            f"{path}: 16-bit image whose brightest value is {peak} uses only {bits} bits; read "
            f"as {bits}-bit data (values / {2**bits - 1}, not / 65535; load_image(bits=16) "
            "reads it as 16-bit)",
            UserWarning,
            stacklevel=4,
        )
    return float(2**bits - 1)


def _to_float(arr: np.ndarray, path: Path, mode_name: str, bits: int | None) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ImageFileError(f"{path}: unsupported pixel type {arr.dtype} (mode {mode_name})")
    # PIL mode "I" holds 16-bit PNGs as int32: the values must still fit in 16 bits
    if arr.dtype.itemsize > 2 and arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ImageFileError(
            f"{path}: integer pixel values outside 0..65535 (mode {mode_name}); "
            "expected an 8- or 16-bit image"
        )
    return arr.astype(np.float32) / _wide_scale(arr, path, bits)


#: PIL modes converted to RGB before reading (CMYK through PIL's own conversion, so that an
#: Adobe CMYK JPEG is not read inverted, and K is not dropped as if it were alpha)
_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV"}

#: PIL modes read as they are: grey, grey + alpha, colour, colour + alpha, 1-bit, 16/32-bit grey
_READ_AS_IS = {"L", "LA", "RGB", "RGBA", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"}

#: What reading an image may raise for a bad file (EOFError: a truncated multi-frame file)
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


def _open_pil(path: Path, fh) -> Image.Image:
    """``Image.open(fh)`` (header only), with Pillow's decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS``: its warning as well as its error) as an :class:`ImageFileError`,
    so that no pixel memory is allocated for a file whose header claims a huge size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fh)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFileError(
            f"{path} is refused: {str(exc).rstrip('.')}; a scan is far smaller, so the file "
            "is damaged or hostile, or must be downsized first"
        ) from exc


def _check_one_frame(path: Path, im: Image.Image) -> None:
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        raise ImageFileError(
            f"{path} holds {frames} frames (a multi-page TIFF or an animated image), and only "
            "single-frame images are read: save the slice to fuse as a PNG of its own"
        )


def _as_readable(path: Path, im: Image.Image) -> Image.Image:
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
    if im.mode in _TO_RGB:
        return im.convert("RGB")
    if im.mode not in _READ_AS_IS:
        raise ImageFileError(
            f"{path}: pixel mode {im.mode} is not supported; save it as an 8- or 16-bit "
            "grayscale or RGB PNG"
        )
    return im


def _open_image(path: Path) -> tuple[np.ndarray, str]:
    """Pixels of ``path`` as an array (H, W) or (H, W, C), and the mode it came in."""
    try:
        with open(path, "rb") as fh, _open_pil(path, fh) as im:
            _check_one_frame(path, im)
            im.load()
            return np.array(_as_readable(path, im)), im.mode
    except ImageFileError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFileError(
            f"cannot read image {path}: {exc}. The file is empty, truncated or not an image; "
            "fetch it again (dilran-lite download) or copy it again."
        ) from exc


def load_image(path: str | os.PathLike, mode: str = "L", bits: int | None = None) -> torch.Tensor:
    """Read an 8-bit or 16-bit image as float32 (C, H, W) in [0, 1].

    ``mode="L"``: grayscale, (1, H, W); an RGB file whose three channels are equal is accepted,
    a true colour image raises :class:`ImageFileError`. ``mode="RGB"``: (3, H, W); a grayscale
    file is repeated to three channels. Alpha is dropped; palette, CMYK, YCbCr, LAB and HSV
    images are converted to RGB by PIL; other modes are refused by name.

    Scale: 8-bit values are divided by 255. A 16-bit file is read at the bit depth its values
    use: the smallest of 8, 10, 12, 14 and 16 bits that holds its brightest value, values
    divided by ``2**bits - 1`` (a 12-bit CT export, values 0..4095, by 4095, not by 65535,
    which would leave it near black), and a ``UserWarning`` names the file and the bits when
    fewer than 16. The depth is rounded up to an even count so that the slices of one series,
    whose brightest values differ, share one scale. ``bits`` (8..16) sets the depth instead
    (``bits=16``: always / 65535, no warning).

    Refused with :class:`ImageFileError` naming the file (a ``UserError`` and a ``ValueError``):
    a folder; an unreadable, empty or truncated file; a file of several frames (multi-page
    TIFF, animated GIF/PNG); a header beyond Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``), before any pixel is decoded. A missing path raises
    :class:`MissingImageError`.
    """
    path = Path(path)
    if mode not in ("L", "RGB"):
        raise ValueError(f"load_image mode must be 'L' or 'RGB', got {mode!r}")
    if bits is not None and (not isinstance(bits, int) or not 8 <= bits <= 16):
        raise ValueError(f"load_image bits must be None or an integer 8..16, got {bits!r}")
    if path.is_dir():
        raise ImageFileError(f"{path} is a folder, not an image file; give the path of a .png")
    if not path.is_file():
        raise MissingImageError(f"image not found: {path}; check the path")
    arr, mode_name = _open_image(path)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)
        if arr.shape[0] in (2, 4):  # LA, RGBA: drop alpha
            arr = arr[:-1]
    else:
        raise ImageFileError(f"{path}: unexpected image array shape {arr.shape}")
    x = _to_float(np.ascontiguousarray(arr), path, mode_name, bits)
    if mode == "L" and x.shape[0] == 3:
        if not (np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])):
            raise ImageFileError(
                f"{path} is a colour image (mode {mode_name}) where a grayscale image is "
                "expected; MRI and CT must be single-channel (convert it to grayscale)"
            )
        x = x[:1]
    elif mode == "RGB" and x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    return torch.from_numpy(np.ascontiguousarray(x))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) in pixels from the file header, without decoding the pixels. An unreadable file
    or one beyond the decompression-bomb limit raises :class:`ImageFileError` (a ValueError)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh, _open_pil(path, fh) as im:
            w, h = im.size
    except ImageFileError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFileError(
            f"cannot read image {path}: {exc}. The file is unreadable; "
            "delete it and fetch it again (dilran-lite download) or copy it again."
        ) from exc
    return h, w


#: The former private name of :func:`image_size`, kept for modules that still import it.
_image_size = image_size


def _manifest_splits(pairs: str) -> dict | None:
    path = Path(__file__).resolve().parent / "manifests" / f"{pairs}.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh).get("splits")


def load_splits(pairs: str = "mri-ct", root: str | os.PathLike | None = None) -> dict:
    """The splits of a dataset: ``{"paper": {"train": [names], "val": [...], "test": [...]},
    "series": {...}}`` (MRI-PET/SPECT have ``series`` only). Names are file names (``NAME.png``).

    Reads ``splits.json`` in the dataset folder, falling back to the manifest shipped in the
    package. A ``description`` entry, if present, is kept as a string.
    """
    pairs = _check_pairs(pairs)
    path = dataset_dir(pairs, root) / "splits.json"
    if path.is_file():
        try:
            with open(path, encoding="utf-8") as fh:
                splits = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise SplitFileError(f"cannot read split file {path}: {exc}") from exc
        where = str(path)
    else:
        splits = _manifest_splits(pairs)
        where = f"the {pairs} manifest shipped in dilran_lite/manifests"
        if splits is None:
            raise FileNotFoundError(f"no splits.json at {path} and no shipped manifest for {pairs}")
    if not isinstance(splits, dict):
        raise SplitFileError(
            f"split file {where} must hold a JSON object, got {type(splits).__name__}"
        )
    for scheme, parts in splits.items():
        if scheme == "description":
            continue
        if not isinstance(parts, dict) or not all(isinstance(v, list) for v in parts.values()):
            raise SplitFileError(
                f"split file {where}: '{scheme}' must map part names to lists of file names"
            )
        for part, names in parts.items():
            _check_split_items(names, f"{scheme}/{part}", where)
    return splits


def _check_split_items(names: list, split: str, where: str) -> None:
    """Every item a non-empty file name, none named twice; else a ``SplitFileError``."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise SplitFileError(
                f"split file {where}: item {i} of '{split}' is {name!r}, not a file name; "
                'fix the file (each part is a list of names such as "NAME.png")'
            )
        if name in seen:
            raise SplitFileError(
                f"split file {where}: '{split}' names {name!r} twice; remove the duplicate"
            )
        seen.add(name)


def split_names(splits: dict, split: str, where: str = "splits.json") -> list[str]:
    """The names in ``split`` (``"scheme/part"``, e.g. ``"series/test"``) of a splits dict."""
    scheme, sep, part = str(split).partition("/")
    if not sep or scheme not in splits or scheme == "description":
        schemes = [k for k in splits if k != "description"]
        raise ValueError(
            f"split {split!r} not in {where}: use 'scheme/part' with scheme one of {schemes}"
        )
    if part not in splits[scheme]:
        raise ValueError(
            f"split {split!r} not in {where}: parts of '{scheme}' are {list(splits[scheme])}"
        )
    return list(splits[scheme][part])


def series_of(name: str) -> str:
    """The scan series of an atlas name: ``"34002.png" -> "34"``, ``"2004.png" -> "2"``."""
    stem = Path(name).stem
    if len(stem) < 4 or not stem.isdigit():
        raise ValueError(f"atlas name {name!r} is not SNNN.png or SSNNN.png")
    return stem[:-3]


def slice_of(name: str) -> int:
    """The slice number of an atlas name: ``"34002.png" -> 2``, ``"2004.png" -> 4``."""
    series_of(name)  # validates the name
    return int(Path(name).stem[-3:])


class PairedDataset(torch.utils.data.Dataset):
    """Co-registered pairs from ``<root>/<MODALITY>/<NAME>.png``.

    ``root``: the dataset folder itself or the data root holding it (default
    :func:`resolve_data_root`). ``names`` or ``split`` (``"series/test"``, ``"paper/train"``)
    select pairs; default: all pairs. ``augment``: identical random flips/rot90 (and random
    ``crop``) on both images; without ``augment`` a given ``crop`` is a centre crop.

    ``ds[i] -> (a, b, name)``: a = MRI float32 (1, H, W), b = CT (1, H, W) or PET/SPECT
    (3, H, W), both in [0, 1]. Checks at construction (names present in both modalities, sizes
    within a pair, readable headers, non-empty folder) raise ``ValueError`` or
    ``FileNotFoundError`` naming the files; truncated pixel data raises when the pair is read.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        pairs: str = "mri-ct",
        names: list[str] | None = None,
        split: str | None = None,
        augment: bool = False,
        crop: int | None = None,
        seed: int = 0,
    ) -> None:
        self.pairs = _check_pairs(pairs)
        self.modalities = PAIRS[self.pairs]
        self.root = dataset_dir(self.pairs, root)
        self.augment, self.crop, self.seed = bool(augment), crop, int(seed)
        self._aug = Augmenter(seed)
        if crop is not None and (not isinstance(crop, int) or crop < 1):
            raise ValueError(f"crop must be a positive integer, got {crop!r}")
        self._check_folders()
        available = self._scan()
        self.split = split
        if split is not None:
            if names is not None:
                raise ValueError("give either names or split, not both")
            where = str(self.root / "splits.json")
            names = split_names(load_splits(self.pairs, self.root), split, where)
        if names is None:
            names = sorted(available, key=_natural_key)
        else:
            names = [n if n.endswith(IMAGE_SUFFIX) else n + IMAGE_SUFFIX for n in names]
            missing = [n for n in names if n not in available]
            if missing:
                what = f"split {split!r}" if split else "names"
                raise FileNotFoundError(
                    f"{len(missing)} pair(s) of {what} not found in {self.root}: "
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                )
        if not names:
            raise ValueError(f"no pairs selected in {self.root} (split {split!r})")
        self.names = list(names)
        self._check_sizes()
        kind = "-".join(self.modalities)
        sel = f", split {split}" if split else ""
        self.source = f"Harvard atlas {kind} ({self.root.name}{sel}, {len(self.names)} pairs)"

    def _check_folders(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset folder {self.root} not found: get the atlas with `dilran-lite download` "
                f"(or dilran_lite.download.download_atlas), or set ${ENV_VAR} to the folder "
                f"holding {DATASET_DIRS[self.pairs]}/"
            )
        for m in self.modalities:
            if not (self.root / m).is_dir():
                raise FileNotFoundError(
                    f"{self.root / m} not found: a {'-'.join(self.modalities)} dataset folder "
                    f"holds {self.modalities[0]}/NAME.png and {self.modalities[1]}/NAME.png"
                )

    def _scan(self) -> set[str]:
        found = {
            m: {p.name for p in (self.root / m).iterdir() if p.suffix.lower() == IMAGE_SUFFIX}
            for m in self.modalities
        }
        a, b = (found[m] for m in self.modalities)
        if not a and not b:
            raise ValueError(
                f"no {IMAGE_SUFFIX} images in {self.root / self.modalities[0]} or "
                f"{self.root / self.modalities[1]}: the dataset folder is empty"
            )
        for m, only in ((self.modalities[0], a - b), (self.modalities[1], b - a)):
            if only:
                other = self.modalities[1] if m == self.modalities[0] else self.modalities[0]
                files = ", ".join(str(self.root / m / n) for n in sorted(only)[:5])
                raise ValueError(
                    f"{len(only)} image(s) in {m}/ have no partner in {other}/: {files}"
                    f"{' ...' if len(only) > 5 else ''}"
                )
        return a

    def _check_sizes(self) -> None:
        for n in self.names:
            pa, pb = (self.path(n, m) for m in self.modalities)
            sa, sb = image_size(pa), image_size(pb)
            if sa != sb:
                raise ValueError(f"pair {n}: sizes differ, {pa} is {sa} (HxW) but {pb} is {sb}")

    def path(self, name: str, modality: str) -> Path:
        """The file of ``name`` (``NAME.png``) in ``modality``."""
        return self.root / modality / name

    def _mode(self, modality: str) -> str:
        return "L" if modality in ("MRI", "CT") else "RGB"

    def load(self, name: str, modality: str) -> torch.Tensor:
        """One image of the dataset, (1, H, W) or (3, H, W) float32, without augmentation."""
        return load_image(self.path(name, modality), self._mode(modality))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        name = self.names[i]
        a, b = (self.load(name, m) for m in self.modalities)
        if a.shape[-2:] != b.shape[-2:]:
            pa, pb = (self.path(name, m) for m in self.modalities)
            raise ValueError(
                f"pair {name}: sizes differ, {pa} is {tuple(a.shape[-2:])} but {pb} is "
                f"{tuple(b.shape[-2:])}"
            )
        if self.augment or self.crop:
            a, b = augment_pair(a, b, self._aug.generator(), crop=self.crop, flips=self.augment)
        return a, b, name

    def __repr__(self) -> str:
        return f"PairedDataset({self.source})"


def _natural_key(name: str):
    stem = Path(name).stem
    return (0, int(stem)) if stem.isdigit() else (1, stem)


class SingleImageDataset(torch.utils.data.Dataset):
    """Every image of both modalities as a single 1-channel image, for autoencoder training.

    ``source``: a :class:`PairedDataset` or :class:`PhantomDataset` (anything yielding
    ``(a, b, name)``), or else a root passed with ``pairs``/``split``/``names`` to build a
    PairedDataset. Colour images become their Y channel (BT.601). ``ds[i] -> (1, H, W)``
    float32 in [0, 1]; item ``2k`` is the MRI of pair ``k``, ``2k + 1`` the other modality.
    """

    def __init__(
        self,
        source=None,
        pairs: str = "mri-ct",
        names: list[str] | None = None,
        split: str | None = None,
        augment: bool = False,
        crop: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(source, torch.utils.data.Dataset):
            source = PairedDataset(source, pairs=pairs, names=names, split=split)
        self.paired = source
        self.augment, self.crop = bool(augment), crop
        self._aug = Augmenter(seed)
        self.modalities = getattr(source, "modalities", ("MRI", "CT"))
        self.source = f"single images from {getattr(source, 'source', type(source).__name__)}"

    def __len__(self) -> int:
        return 2 * len(self.paired)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(f"SingleImageDataset index {i} out of range ({len(self)} images)")
        i %= len(self)
        k, which = divmod(i, 2)
        if isinstance(self.paired, PairedDataset) and not (self.paired.augment or self.paired.crop):
            name = self.paired.names[k]
            x = self.paired.load(name, self.paired.modalities[which])
        else:
            x = self.paired[k][which]
        if x.shape[0] == 3:
            x = rgb_to_luma(x)
        if self.augment or self.crop:
            (x,) = augment_images([x], self._aug.generator(), self.crop, self.augment)
        return x


#: quick mode: the pairs of each colour atlas a chapter uses (the first of its series/test split)
QUICK_COLOUR_PAIRS = 4


def quick_names(pairs: str, n: int = QUICK_COLOUR_PAIRS) -> list[str]:
    """The first ``n`` pairs (file names) of the atlas's ``series/test`` split: what a chapter
    fetches and uses of a colour atlas in quick mode."""
    return split_names(load_splits(pairs), "series/test")[:n]


def load_pairs(
    pairs: str = "mri-ct",
    split: str | None = "series/test",
    root: str | os.PathLike | None = None,
    fallback: str | None = "phantom",
    n_phantom: int = 8,
    limit: int | None = None,
    **kwargs,
):
    """The dataset every notebook starts from.

    Returns a :class:`PairedDataset` over the atlas when its folder is found (see
    :func:`resolve_data_root`), else prints one line saying so and returns a
    :class:`PhantomDataset` of ``n_phantom`` pairs (``fallback="phantom"``), or raises
    ``FileNotFoundError`` (``fallback=None``). ``limit``: only the first ``limit`` pairs of the
    split (all that a quick-mode fetch of :func:`quick_names` brings). ``kwargs`` (augment, crop,
    seed) go to the dataset. A phantom for a ``test``/``val`` split uses other seeds than for
    ``train``.
    """
    pairs = _check_pairs(pairs)
    folder = dataset_dir(pairs, root)
    if is_dataset_folder(folder, pairs):
        if limit is not None and split is not None:
            names = split_names(load_splits(pairs, root), split)[:limit]
            return PairedDataset(folder, pairs=pairs, names=names, **kwargs)
        return PairedDataset(folder, pairs=pairs, split=split, **kwargs)
    if fallback is None:
        raise FileNotFoundError(
            f"the {pairs} atlas was not found at {display_path(folder)}: run "
            "`dilran-lite download` (or dilran_lite.download.download_atlas()) or set $DILRAN_DATA"
        )
    if fallback != "phantom":
        raise ValueError(f"fallback must be 'phantom' or None, got {fallback!r}")
    part = str(split).rpartition("/")[2] if split else "train"
    offset = {"train": 0, "val": 10_000, "test": 20_000}.get(part, 30_000)
    seed = int(kwargs.pop("seed", 0)) + offset
    ds = PhantomDataset(n=n_phantom, seed=seed, modality=PAIRS[pairs][1], **kwargs)
    print(
        f"Atlas {DATASET_DIRS[pairs]} not found at {display_path(folder)}; get it with "
        "`dilran-lite download` or dilran_lite.download.download_atlas(). "
        f"Using the {ds.source} instead."
    )
    return ds
