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
Files already present with the right checksum are not fetched again. A download holds a lock
on the dataset folder (``fcntl.flock`` on the folder itself, see :func:`folder_lock`): a second
download into the same folder waits for the first, then finds its files verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ._io import atomic_write_text, file_mode
from .data import DATASET_DIRS, ENV_VAR, PAIRS, dataset_dir, resolve_data_root
from .errors import DownloadError

try:
    import fcntl
except ImportError:  # Windows: no flock; stale temporary files are then told apart by age
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DownloadError",
    "DownloadSummary",
    "load_manifest",
    "check_manifest",
    "download_atlas",
    "folder_lock",
    "verify_atlas",
]

CHUNK = 1 << 16
LOCAL_TEMPLATE = "{dataset}/{modality}/{name}"
#: Temporary files are named ``.<NAME><PART_TAG><random>.part``; only these are ever cleaned up.
PART_TAG = ".dilran-download-"
#: Size limit for a manifest entry without a ``size`` (a hand-written manifest).
MAX_FILE_BYTES = 16 << 20
#: After this many files in a row fail to connect, the download stops: the source is unreachable.
MAX_CONNECTION_FAILURES = 3
#: Seconds a download waits for another one into the same folder before it gives up.
LOCK_WAIT = 600.0
#: Seconds between two tries of the folder's lock.
LOCK_POLL = 0.2
#: Without a lock (no ``fcntl``), only temporary files older than this (seconds) are stale.
STALE_AGE = 3600.0
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.png")
_HEX = re.compile(r"[0-9a-f]{64}")


class _NotFound(DownloadError):
    """The source answered 404 for a file (a wrong mirror address, when no file came yet)."""


class _Unreachable(DownloadError):
    """The source could not be connected to at all (offline, wrong host, refused)."""


@dataclass
class DownloadSummary:
    """What one :func:`download_atlas` call did: relative paths (``CT/2004.png``) of the files
    found verified, fetched and failed (with the reason)."""

    folder: Path
    verified: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_attempted: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line: the counts, and the names of the failed files."""
        total = len(self.verified) + len(self.fetched) + len(self.failed) + len(self.not_attempted)
        text = (
            f"{self.folder}: {total // 2} pairs ({total} files), {len(self.verified)} already "
            f"verified, {len(self.fetched)} fetched, {len(self.failed)} failed"
        )
        if self.failed:
            names = list(self.failed)
            text += f" ({', '.join(names[:8])}{' ...' if len(names) > 8 else ''})"
        if self.not_attempted:
            text += f", {len(self.not_attempted)} not attempted"
        return text


def load_manifest(pairs: str = "mri-ct") -> dict:
    """The manifest shipped in ``dilran_lite/manifests/<pairs>.json``: ``sha256`` and ``size``
    (relative path -> hex digest, bytes), ``splits``, ``source`` (base URL and path template),
    ``modalities``."""
    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    ref = resources.files("dilran_lite").joinpath("manifests", f"{pairs}.json")
    try:
        return json.loads(ref.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"manifest dilran_lite/manifests/{pairs}.json is missing from the installed package"
        ) from exc


def check_manifest(man: dict, pairs: str) -> tuple[str, tuple[str, str]]:
    """Validate a manifest before anything is fetched; return its dataset folder and modalities.

    Every entry must be ``<MODALITY>/<NAME>.png`` with one of the pair set's two modalities and a
    plain file name (no absolute path, no ``..``, no other folder), a 64-digit SHA-256 and, when
    ``size`` is given, a positive byte count. Raises :class:`DownloadError` naming the entry.
    """
    if not isinstance(man, dict) or not isinstance(man.get("sha256"), dict):
        raise DownloadError(f"the {pairs} manifest must be a JSON object with a 'sha256' object")
    dataset = man.get("dataset", DATASET_DIRS[pairs])
    modalities = tuple(man.get("modalities", PAIRS[pairs]))
    if dataset != DATASET_DIRS[pairs] or modalities != PAIRS[pairs]:
        raise DownloadError(
            f"the {pairs} manifest names dataset {dataset!r} with {list(modalities)}; expected "
            f"{DATASET_DIRS[pairs]!r} with {list(PAIRS[pairs])}"
        )
    sizes = man.get("size", {})
    if not isinstance(sizes, dict):
        raise DownloadError(f"the {pairs} manifest's 'size' must be an object")
    for rel, digest in man["sha256"].items():
        modality, _, name = str(rel).partition("/")
        problem = None
        if modality not in modalities or not _NAME.fullmatch(name) or ".." in name:
            problem = f"not {'/'.join(modalities)}-folder/NAME.png"
        elif not isinstance(digest, str) or not _HEX.fullmatch(digest):
            problem = "its sha256 is not 64 lowercase hex digits"
        elif rel in sizes and (
            not isinstance(sizes[rel], int) or isinstance(sizes[rel], bool) or sizes[rel] < 1
        ):
            problem = f"its size {sizes[rel]!r} is not a positive integer"
        if problem:
            raise DownloadError(f"the {pairs} manifest entry {rel!r} is refused: {problem}")
    return dataset, modalities  # type: ignore[return-value]


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


def _offline_hint(dest: Path, dataset: str) -> str:
    return (
        f"You seem to be offline, or the source is unreachable: copy the atlas folder {dataset}/ "
        f"by hand and set ${ENV_VAR} to the folder holding it (the data root is now {dest}), or "
        "give a mirror with --base-url (base_url=, or $DILRAN_MIRROR in the notebooks), or work "
        "offline on the built-in phantom "
        "(the notebooks use it when the atlas is absent)."
    )


def _temp(target: Path) -> tuple[int, Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}{PART_TAG}", suffix=".part", dir=target.parent
    )
    return fd, Path(name)


def _stream(url: str, out, size: int, exact: bool, timeout: float):
    """Copy ``url`` into the open file ``out``; refuse as soon as it passes ``size`` bytes, or
    (``exact``: ``size`` is the manifest's) ends before. Returns the SHA-256 of what was written."""
    h = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        announced = int(length) if length and length.isdigit() else None
        if announced is not None and (announced > size or (exact and announced != size)):
            raise DownloadError(
                f"the server announces {announced} bytes, the manifest "
                f"{size if exact else f'at most {size}'}: refused before reading"
            )
        while True:
            block = resp.read(min(CHUNK, size + 1 - received))
            if not block:
                break
            received += len(block)
            if received > size:
                raise DownloadError(
                    f"more than the expected {size} bytes: refused while streaming, nothing kept"
                )
            out.write(block)
            h.update(block)
    expected = size if exact else announced
    if expected is not None and received != expected:
        raise DownloadError(f"the transfer was interrupted: got {received} of {expected} bytes")
    return h


def _fetch(url: str, target: Path, digest: str, size: int | None, timeout: float) -> None:
    """Download ``url`` to a temp file beside ``target``, check size and SHA-256, move in place.

    ``size``: the manifest's byte count (None: at most :data:`MAX_FILE_BYTES`). Raises
    :class:`DownloadError` with a short reason (``_Unreachable`` for connection errors).
    """
    fd, tmp = _temp(target)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                h = _stream(url, out, size or MAX_FILE_BYTES, size is not None, timeout)
        except urllib.error.HTTPError as exc:
            kind = _NotFound if exc.code == 404 else DownloadError
            raise kind(f"HTTP {exc.code} {exc.reason} from {url}") from exc
        except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Unreachable(f"could not fetch {url}: {reason}") from exc
        except (OSError, ValueError) as exc:
            raise DownloadError(f"could not fetch {url}: {exc}") from exc
        got = h.hexdigest()
        if got != digest:
            raise DownloadError(
                f"checksum mismatch (expected sha256 {digest[:12]}..., got {got[:12]}...): the "
                "downloaded file was deleted"
            )
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _is_stale(path: Path, locked: bool) -> bool:
    """A temporary file of ours is stale when this run holds the folder's lock (no other run can
    be writing it); without a lock, only when it is older than :data:`STALE_AGE`."""
    if locked:
        return True
    try:
        return time.time() - path.stat().st_mtime > STALE_AGE
    except OSError:
        return False


def _clean_parts(folder: Path, modalities: Iterable[str], locked: bool = True) -> list[Path]:
    """Remove the downloader's own temporary files left by an earlier (killed) run."""
    removed = []
    for d in (folder, *(folder / m for m in modalities)):
        for stale in d.glob(f".*{PART_TAG}*.part") if d.is_dir() else []:
            if _is_stale(stale, locked):
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


@contextmanager
def folder_lock(folder: Path, wait: float = LOCK_WAIT, progress: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock (``fcntl.flock``) on ``folder`` itself while downloading into it.

    A second download into the same folder waits up to ``wait`` seconds (saying so once when
    ``progress``), then raises :class:`DownloadError` ("another download is running in FOLDER").
    The lock leaves no file behind and ends with the process that holds it, killed or not.
    Yields False where no lock exists (Windows, some network file systems).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield False
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + max(0.0, float(wait))
        got = _try_lock(fd)
        if got is False and progress:
            print(f"Another download is running in {folder}; waiting for it to finish.")
        while got is False:
            if time.monotonic() >= deadline:
                raise DownloadError(
                    f"another download is running in {folder}: let it finish (or stop it), then "
                    "run again; verified files are kept"
                )
            time.sleep(LOCK_POLL)
            got = _try_lock(fd)
        yield bool(got)
    finally:
        os.close(fd)  # releases the lock


def _select(sums: dict[str, str], names: Iterable[str] | None, pairs: str) -> dict[str, str]:
    if names is None:
        return sums
    wanted = {n if n.endswith(".png") else f"{n}.png" for n in names}
    unknown = wanted - {rel.split("/", 1)[1] for rel in sums}
    if unknown:
        raise ValueError(f"names not in the {pairs} manifest: {sorted(unknown)[:5]}")
    return {rel: d for rel, d in sums.items() if rel.split("/", 1)[1] in wanted}


@dataclass
class _Plan:
    """What a download will do: where, and each file (relative path, SHA-256, URL, size)."""

    man: dict
    root: Path
    dataset: str
    modalities: tuple[str, str]
    todo: list[tuple[str, str, str, int | None]]

    @property
    def folder(self) -> Path:
        return self.root / self.dataset


def _plan(
    dest: str | os.PathLike | None,
    pairs: str,
    base_url: str | None,
    names: Iterable[str] | None,
    manifest: dict | None,
    url_template: str | None,
) -> _Plan:
    """Validate the manifest and the names, and list the files with their URLs (no I/O)."""
    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    man = manifest if manifest is not None else load_manifest(pairs)
    dataset, modalities = check_manifest(man, pairs)
    sums = _select(dict(man["sha256"]), names, pairs)
    sizes: dict[str, int] = man.get("size", {})
    if base_url is None:
        base = man["source"]["base_url"]
        template = url_template or man["source"]["path_template"]
    else:
        base = base_url
        template = url_template or LOCAL_TEMPLATE
    if not base.endswith("/"):
        base += "/"
    todo = []  # by pair: the files of one pair one after the other
    for rel, digest in sorted(sums.items(), key=lambda item: item[0].split("/", 1)[::-1]):
        modality, name = rel.split("/", 1)
        url = base + template.format(dataset=dataset, modality=modality, name=name)
        todo.append((rel, digest, url, sizes.get(rel)))
    return _Plan(man, resolve_data_root(dest), dataset, modalities, todo)


def _fetch_all(plan: _Plan, timeout: float, progress: bool) -> tuple[DownloadSummary, bool]:
    """Fetch every planned file not already verified. Returns the summary and whether any
    failure was a connection failure; stops with :class:`DownloadError` after
    :data:`MAX_CONNECTION_FAILURES` connection failures in a row."""
    from tqdm.auto import tqdm

    summary = DownloadSummary(plan.folder)
    in_a_row, unreachable, wrong_address = 0, False, False
    per_pair = len(plan.modalities)
    bar = tqdm(total=len(plan.todo) // per_pair, unit="pair", desc=plan.dataset,
               disable=not progress)  # fmt: skip
    try:
        for i, (rel, digest, url, size) in enumerate(plan.todo):
            target = plan.folder / rel
            if target.is_file() and _sha256(target) == digest:
                summary.verified.append(rel)
                bar.update(1 if (i + 1) % per_pair == 0 else 0)
                continue
            try:
                _fetch(url, target, digest, size, timeout)
                summary.fetched.append(rel)
                in_a_row = 0
            except DownloadError as err:
                summary.failed[rel] = str(err)
                # before any file came, a 404 means a wrong address: the source is unreachable
                gone = isinstance(err, _Unreachable) or (
                    isinstance(err, _NotFound) and not summary.fetched
                )
                wrong_address = wrong_address or isinstance(err, _NotFound)
                in_a_row = in_a_row + 1 if gone else 0
                unreachable = unreachable or isinstance(err, _Unreachable)
                bar.set_postfix(failed=len(summary.failed))
                if in_a_row >= MAX_CONNECTION_FAILURES:
                    summary.not_attempted = [r for r, *_ in plan.todo[i + 1 :]]
                    raise DownloadError(
                        f"{summary.line()}: {err}. {_offline_hint(plan.root, plan.dataset)}"
                    ) from err
            bar.update(1 if (i + 1) % per_pair == 0 else 0)
    finally:
        bar.close()
    return summary, unreachable or (wrong_address and not summary.fetched)


def _finish(plan: _Plan, summary: DownloadSummary, unreachable: bool, progress: bool) -> None:
    """Raise one line naming the failed files, if any; else record ``splits.json`` and
    ``sha256.json`` in the dataset folder and print the summary line."""
    if summary.failed:
        hint = _hint(plan.root, plan.dataset, plan.modalities)
        if unreachable:
            hint = _offline_hint(plan.root, plan.dataset)
        reasons = "; ".join(f"{rel}: {why}" for rel, why in list(summary.failed.items())[:3])
        more = len(summary.failed) - 3
        raise DownloadError(
            f"{summary.line()}. {reasons}{f'; and {more} more' if more > 0 else ''}. The failed "
            f"files were not written. {hint}"
        )
    if plan.man.get("splits") is not None:
        _write_json(plan.folder / "splits.json", plan.man["splits"])
    _write_json(plan.folder / "sha256.json", dict(sorted(plan.man["sha256"].items())))
    if progress:
        print(summary.line())


def download_atlas(
    dest: str | os.PathLike | None = None,
    pairs: str = "mri-ct",
    base_url: str | None = None,
    progress: bool = True,
    names: Iterable[str] | None = None,
    manifest: dict | None = None,
    url_template: str | None = None,
    timeout: float = 30.0,
    wait: float = LOCK_WAIT,
) -> Path:
    """Fetch the ``pairs`` atlas (``"mri-ct"``: 184, ``"mri-pet"``: 269, ``"mri-spect"``: 357
    pairs) into ``<dest>/<dataset folder>`` and return that folder.

    ``dest``: the data root (default :func:`dilran_lite.data.resolve_data_root`). ``base_url``:
    a mirror laid out like the data root (``<base_url>/harvard-mri-ct/CT/NAME.png``); default
    the public source in the manifest. ``url_template``: overrides the path under the base, with
    ``{dataset}``, ``{modality}`` and ``{name}`` fields. ``names``: only these pairs (``NAME.png``).
    ``manifest``: a manifest dict instead of the shipped one (same keys; validated first).
    ``progress``: a ``tqdm.auto`` bar and a summary line at the end. ``timeout``: seconds per
    connection. ``wait``: seconds to wait for another download into the same folder
    (:func:`folder_lock`), after which :class:`DownloadError` says that one is running.

    Steps: plan (validate, list URLs), fetch (under the folder's lock), finish (report, record).
    Idempotent: verified files are skipped; ``splits.json`` and ``sha256.json`` are written into
    the dataset folder. No file is ever written beyond its manifest size, and temporary ``.part``
    files of an earlier, killed run are removed. A file that fails is reported and the others
    are still fetched; then :class:`DownloadError` names every failed file (one line). Several
    files in a row that cannot connect stop the download with a message on working offline.
    Files get the mode of a plain ``open()`` under the umask (``-rw-r--r--`` under umask 022).
    """
    plan = _plan(dest, pairs, base_url, names, manifest, url_template)
    with folder_lock(plan.folder, wait, progress) as locked:
        _clean_parts(plan.folder, plan.modalities, locked)
        summary, unreachable = _fetch_all(plan, timeout, progress)
        _finish(plan, summary, unreachable, progress)
    return plan.folder


def verify_atlas(
    pairs: str = "mri-ct",
    root: str | os.PathLike | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, list[str]]:
    """Check a local atlas folder against the shipped manifest (``names``: only those pairs).

    Returns ``{"missing": [...], "corrupt": [...]}`` (relative paths such as ``CT/2004.png``).
    """
    man = load_manifest(pairs)
    folder = dataset_dir(pairs, root)
    out: dict[str, list[str]] = {"missing": [], "corrupt": []}
    for rel, digest in sorted(_select(man["sha256"], names, pairs).items()):
        path = folder / rel
        if not path.is_file():
            out["missing"].append(rel)
        elif _sha256(path) != digest:
            out["corrupt"].append(rel)
    return out
