"""Shared fixtures. The atlas is read from ../shared/data beside the checkout (CI has it there);
tests that need it are skipped with a clear reason when it is absent."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import time
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


# The built book and a headless Chromium, shared by every browser test (one Playwright per
# session: two sync_playwright() contexts in one process refuse to run).

BUILD = REPO / "_build"
HTML = BUILD / "html"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Every page of sphinx-book-theme 1.3 declares this twice; harmless, and not ours to fix.
KNOWN_PAGE_ERRORS = ("THEBE_JS_URL",)
TIMEOUT_MS = 30_000


def _sources() -> list[Path]:
    files = [REPO / "_config.yml", REPO / "_toc.yml"]
    files += sorted((REPO / "book").rglob("*"))
    files += sorted((REPO / "notebooks").glob("*.ipynb"))
    files += sorted((REPO / "_vendor").rglob("*"))
    return [f for f in files if f.is_file()]


def _build_is_fresh() -> bool:
    index = HTML / "index.html"
    if not index.is_file():
        return False
    built = index.stat().st_mtime
    return all(f.stat().st_mtime <= built for f in _sources())


@pytest.fixture(scope="session")
def built_book() -> Path:
    """_build/html, built with `jupyter-book build . --all -W -n --keep-going` unless up to date.

    --all: an incremental Sphinx build with no changed page skips copying _vendor/ to _static/.
    """
    vendored = REPO / "_vendor"
    if not (vendored / "mathjax" / "tex-mml-chtml.js").is_file():
        pytest.fail(
            "_vendor/ is empty: run `bash scripts/vendor_assets.sh` (or `make browser`) first; "
            "the book serves MathJax and the widget manager from there instead of a CDN"
        )
    if not _build_is_fresh():
        jb = Path(sys.executable).with_name("jupyter-book")
        exe = str(jb) if jb.exists() else "jupyter-book"
        cmd = [exe, "build", ".", "--all", "-W", "-n", "--keep-going"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            pytest.fail(
                f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}, {took:.0f} s):\n"
                + (proc.stdout + proc.stderr)[-4000:]
            )
        (HTML / "index.html").touch()
        print(f"book built in {took:.1f} s")
    return HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def server(built_book: Path):
    """http://127.0.0.1:<port>/ serving _build/html from a thread."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: run `bash scripts/install_chromium.sh` as root "
            "(apt-get install -y chromium), or set CHROMIUM=/path/to/chromium"
        )
    # Playwright gives the browser a fresh temporary profile (it refuses --user-data-dir here).
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def tiny_train_config(**kw):
    """A training run of seconds: an 8-channel lite model, 3 phantom pairs of 48 px, 32-px
    crops with augmentation, 3 epochs of 2 steps (tests of train and of the checkpoint format)."""
    from dilran_lite.train import TrainConfig

    base = dict(
        preset="lite",
        model={"width": 8, "recon_widths": [8, 8]},
        data="phantom",
        phantom_pairs=3,
        phantom_size=48,
        epochs=3,
        steps_per_epoch=2,
        batch_size=2,
        crop=32,
        augment=True,
        lr=1e-3,
        lambda2=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)
