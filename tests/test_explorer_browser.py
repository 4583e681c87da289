"""The static fusion explorer (no kernel) in a real browser: headless Chromium driven by Playwright.

Two pages: a small explorer written by :func:`dilran_lite.explorer.static_explorer_html` to a
temporary file (no book build needed), and chapter 7 of the built book (``_build/html``, built by
the fixtures of ``tests/test_book_browser.py`` when stale). On each, the test moves the W1 slider
and changes the strategy and checks that the fused image's ``src`` and the numbers shown change,
with no request leaving the machine and no JavaScript error.

Run with ``pytest tests/test_explorer_browser.py -m browser`` (``make browser`` installs Chromium).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 30_000
CHAPTER = "notebooks/07_fusion_strategies.html"


def _state(root) -> dict:
    """What the reader sees: the fused image's src, W1, W2, the metrics and the auto box."""
    return root.evaluate(
        """el => {
            const q = r => el.querySelector(`[data-role=${r}]`);
            return {fused: q("fused").src, first: q("first").src, w1: q("w1text").textContent,
                    w2: q("w2text").textContent, metrics: q("metrics").textContent,
                    auto: q("auto").checked, slider: q("w1value").textContent};
        }"""
    )


def _drive(page) -> None:
    """Move the slider, change the strategy and the pair; assert that what is shown changes."""
    root = page.locator(".dilran-static-explorer").first
    root.scroll_into_view_if_needed(timeout=TIMEOUT_MS)
    page.wait_for_function(
        """() => { const i = document.querySelector(
                '.dilran-static-explorer [data-role=fused]');
                return i && i.complete && i.naturalWidth > 0; }""",
        timeout=TIMEOUT_MS,
    )
    start = _state(root)
    assert start["auto"] and start["fused"].startswith("data:image/")
    assert start["w1"] and start["metrics"]

    slider = root.locator("[data-role=w1]")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    moved = _state(root)
    assert not moved["auto"], "moving the slider switches to a manual W1"
    assert moved["fused"] != start["fused"], "the slider did not change the image"
    assert moved["w1"] != start["w1"] and moved["metrics"] != start["metrics"]
    assert float(moved["w1"]) + float(moved["w2"]) == pytest.approx(1.0, abs=1e-3)
    page.keyboard.press("ArrowLeft")
    back = _state(root)
    assert back["fused"] != moved["fused"] and back["slider"] != moved["slider"]

    strategy = root.locator("[data-role=strategy]")
    options = strategy.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert len(options) >= 2
    seen = {back["fused"]}
    for s in options[1:3]:
        strategy.select_option(s)
        now = _state(root)
        assert now["auto"], "changing the strategy shows its own weights"
        assert now["fused"] not in seen, f"strategy {s} did not change the image"
        assert now["metrics"] != start["metrics"] or now["w1"] != start["w1"]
        seen.add(now["fused"])

    pair = root.locator("[data-role=pair]")
    if pair.locator("option").count() > 1:
        pair.select_option("1")
        assert _state(root)["first"] != start["first"], "the pair menu did not change the sources"


def _open(browser, url: str):
    """A page on ``url`` that refuses (and records) any request leaving the machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    page = context.new_page()
    outside: list[str] = []
    errors: list[str] = []

    def route(r) -> None:
        parts = urlsplit(r.request.url)
        if parts.scheme in {"http", "https"} and parts.hostname != "127.0.0.1":
            outside.append(r.request.url)
            r.abort()
        else:
            r.continue_()

    context.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
    return context, page, outside, errors


@pytest.fixture(scope="module")
def explorer_file(tmp_path_factory) -> Path:
    """A static explorer of two phantom MRI-CT pairs and one MRI-PET pair (lite model, 64 px)."""
    from dilran_lite.explorer import FusionExplorer, static_explorer_html
    from dilran_lite.model import build_model
    from dilran_lite.phantom import PhantomDataset

    torch.manual_seed(0)
    model = build_model("lite").eval()
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.add_(0.5)  # an untrained decoder: shift its output into [0, 1]
    ex = FusionExplorer(model, PhantomDataset(n=2, size=64, seed=1))
    ex.add_pairs(PhantomDataset(n=1, size=64, seed=1, modality="PET"))
    page = static_explorer_html(ex, range(len(ex)), w1_values=(0.0, 0.25, 0.5, 0.75, 1.0))
    path = tmp_path_factory.mktemp("explorer") / "explorer.html"
    path.write_text(f"<!doctype html><html><body>{page}</body></html>")
    return path


def test_static_explorer_file(browser, explorer_file: Path) -> None:
    context, page, outside, errors = _open(browser, explorer_file.as_uri())
    try:
        _drive(page)
    finally:
        context.close()
    assert not outside and not errors, (outside, errors)


_SAVED = "dilran-static-explorer" in (REPO / "notebooks" / "07_fusion_strategies.ipynb").read_text()


@pytest.mark.skipif(
    not _SAVED, reason="chapter 7 holds no saved output of static_explorer_html: execute it first"
)
def test_static_explorer_in_the_book(browser, server: str) -> None:
    """Chapter 7 of the built book: the explorer's images swap with the controls, offline."""
    context, page, outside, errors = _open(browser, f"{server}/{CHAPTER}")
    try:
        assert page.locator(".dilran-static-explorer").count() >= 1, (
            "no static explorer on the page"
        )
        _drive(page)
    finally:
        context.close()
    assert not outside, "requests left the machine:\n" + "\n".join(outside)
    known = ("THEBE_JS_URL",)  # sphinx-book-theme's own, see tests/test_book_browser.py
    assert not [e for e in errors if not any(k in e for k in known)], errors
