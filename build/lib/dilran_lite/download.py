"""Fetch the Harvard atlas pairs and verify every file against the manifest shipped in the package.

Public source: the raw files of github.com/xianming-gu/Havard-Medical-Image-Fusion-Datasets,
pinned to one commit (see ``dilran_lite/manifests/<pairs>.json``, key ``source``). There the
pairs live in ``CT-MRI/``, ``PET-MRI/`` and ``SPECT-MRI/``, each holding ``<MODALITY>/<NAME>.png``
with the same names as locally; the downloader maps the remote top folder to the local one
(``harvard-mri-ct/``, ...). The MRI-CT pairs are also published in github.com/simonZhou86/dilran
(``CT-MRI/``); pass ``base_url``/``url_template`` to use another mirror.

With ``base_url`` given, the source is laid out like the local data root:
``<base_url>/harvard-mri-ct/MRI/NAME.png`` (e.g. a data root served over HTTP, or a
``file://`` URL). Each file is checked against its SHA-256 before it replaces anything: it is
written to a temporary file in the target folder and moved into place with ``os.replace``.
Files already present with the right checksum are not fetched again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from .data import DATASET_DIRS, PAIRS, dataset_dir, resolve_data_root
from .errors import UserError

__all__ = ["DownloadError", "load_manifest", "download_atlas", "verify_atlas"]

CHUNK = 1 << 16
LOCAL_TEMPLATE = "{dataset}/{modality}/{name}"


class DownloadError(UserError, RuntimeError):
    """A file could not be fetched or did not match its checksum."""


def load_manifest(pairs: str = "mri-ct") -> dict:
    """The manifest shipped in ``dilran_lite/manifests/<pairs>.json``: ``sha256`` (relative path
    -> hex digest), ``splits``, ``source`` (base URL and path template), ``modalities``."""
    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    ref = resources.files("dilran_lite").joinpath("manifests", f"{pairs}.json")
    try:
        return json.loads(ref.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"manifest dilran_lite/manifests/{pairs}.json is missing from the installed package"
        ) from exc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _hint(dest: Path, dataset: str, modalities: Iterable[str]) -> str:
    a, b = modalities
    return (
        f"Check your connection and run again (verified files are kept), or copy the atlas "
        f"folder by hand into {dest} (layout {dest}/{dataset}/{a}/NAME.png and "
        f"{dest}/{dataset}/{b}/NAME.png)."
    )


def _fetch(url: str, target: Path, digest: str, timeout: float, hint: str) -> None:
    """Download ``url`` to a temp file beside ``target``, check size and SHA-256, move in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        received = 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    received += len(block)
        except urllib.error.HTTPError as exc:
            raise DownloadError(
                f"could not fetch {target.name} for {target}: HTTP {exc.code} {exc.reason} "
                f"from {url}. {hint}"
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"could not fetch {target} from {url}: {reason}. {hint}") from exc
        if expected is not None and received != expected:
            raise DownloadError(
                f"transfer of {target} from {url} was interrupted: got {received} of {expected} "
                f"bytes; nothing was written. {hint}"
            )
        got = h.hexdigest()
        if got != digest:
            raise DownloadError(
                f"checksum mismatch for {target} (from {url}): expected sha256 {digest}, got "
                f"{got}. The downloaded file was deleted. The source may have changed or the "
                f"transfer was corrupted: run again, use another base_url, or {hint[0].lower()}"
                f"{hint[1:]}"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download_atlas(
    dest: str | os.PathLike | None = None,
    pairs: str = "mri-ct",
    base_url: str | None = None,
    progress: bool = True,
    names: Iterable[str] | None = None,
    manifest: dict | None = None,
    url_template: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch the ``pairs`` atlas (``"mri-ct"``: 184, ``"mri-pet"``: 269, ``"mri-spect"``: 357
    pairs) into ``<dest>/<dataset folder>`` and return that folder.

    ``dest``: the data root (default :func:`dilran_lite.data.resolve_data_root`). ``base_url``:
    a mirror laid out like the data root (``<base_url>/harvard-mri-ct/CT/NAME.png``); default
    the public source in the manifest. ``url_template``: overrides the path under the base, with
    ``{dataset}``, ``{modality}`` and ``{name}`` fields. ``names``: only these pairs (``NAME.png``).
    ``manifest``: a manifest dict instead of the shipped one (same keys). Idempotent: verified
    files are skipped; ``splits.json`` and ``sha256.json`` are written into the dataset folder.
    Raises :class:`DownloadError` naming the file, the URL and what to do.
    """
    from tqdm.auto import tqdm

    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    man = manifest if manifest is not None else load_manifest(pairs)
    dataset = man.get("dataset", DATASET_DIRS[pairs])
    modalities = man.get("modalities", PAIRS[pairs])
    root = resolve_data_root(dest)
    folder = root / dataset
    sums: dict[str, str] = dict(man["sha256"])
    if names is not None:
        wanted = {n if n.endswith(".png") else f"{n}.png" for n in names}
        unknown = wanted - {rel.split("/", 1)[1] for rel in sums}
        if unknown:
            raise ValueError(f"names not in the {pairs} manifest: {sorted(unknown)[:5]}")
        sums = {rel: d for rel, d in sums.items() if rel.split("/", 1)[1] in wanted}
    if base_url is None:
        base = man["source"]["base_url"]
        template = url_template or man["source"]["path_template"]
    else:
        base = base_url
        template = url_template or LOCAL_TEMPLATE
    if not base.endswith("/"):
        base += "/"
    hint = _hint(root, dataset, modalities)

    fetched = 0
    bar = tqdm(total=len(sums), unit="file", desc=f"{dataset}", disable=not progress)
    try:
        for rel, digest in sorted(sums.items()):
            target = folder / rel
            modality, name = rel.split("/", 1)
            if not (target.is_file() and _sha256(target) == digest):
                url = base + template.format(dataset=dataset, modality=modality, name=name)
                _fetch(url, target, digest, timeout, hint)
                fetched += 1
            bar.update(1)
    finally:
        bar.close()
    if man.get("splits") is not None:
        _write_json(folder / "splits.json", man["splits"])
    _write_json(folder / "sha256.json", dict(sorted(man["sha256"].items())))
    if progress:
        print(
            f"{folder}: {len(sums)} files verified ({fetched} fetched, {len(sums) - fetched} "
            "already present)"
        )
    return folder


def verify_atlas(
    pairs: str = "mri-ct", root: str | os.PathLike | None = None
) -> dict[str, list[str]]:
    """Check a local atlas folder against the shipped manifest.

    Returns ``{"missing": [...], "corrupt": [...]}`` (relative paths such as ``CT/2004.png``).
    """
    man = load_manifest(pairs)
    folder = dataset_dir(pairs, root)
    out: dict[str, list[str]] = {"missing": [], "corrupt": []}
    for rel, digest in sorted(man["sha256"].items()):
        path = folder / rel
        if not path.is_file():
            out["missing"].append(rel)
        elif _sha256(path) != digest:
            out["corrupt"].append(rel)
    return out
