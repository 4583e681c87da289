"""The built book in a real browser: headless Chromium (Debian's package) driven by Playwright.

Builds the book into _build/html when a source is newer than the last build (the notebooks are
rendered with the outputs saved in them: execute_notebooks is off in _config.yml), serves
_build/html on 127.0.0.1, opens a chapter page and checks that the title, an equation rendered by
the vendored MathJax, a figure and the ipywidgets slider (from the embedded widget state) are there,
that no request left the machine, and saves screenshots under _build/.

Run with `make browser` (vendors the JavaScript and installs Chromium first) or
`pytest tests -m browser`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import BUILD, KNOWN_PAGE_ERRORS, REPO, TIMEOUT_MS

pytestmark = pytest.mark.browser


def _notebook_title(notebook: Path) -> str:
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    pytest.fail(f"{notebook.name} has no '# Title' line in a markdown cell")


def _page(source: str, full: bool, page_id: str):
    """A page to open; skipped (with the reason) while its chapter has not been written."""
    missing = not (REPO / source).is_file()
    reason = f"{source} does not exist yet: its chapter has not been written"
    return pytest.param(source, full, id=page_id, marks=pytest.mark.skipif(missing, reason=reason))


# (source, expects an equation, a figure and a widget). Chapter 7 holds the W1 explorer widget.
PAGES = [
    _page("notebooks/07_fusion_strategies.ipynb", True, "07_fusion_strategies"),
    _page("book/intro.md", False, "intro"),
]


@pytest.mark.parametrize(("source", "full"), PAGES)
def test_page_renders_offline(source: str, full: bool, server: str, browser) -> None:
    path = REPO / source
    rel = Path(source).with_suffix(".html").as_posix()
    if source.endswith(".ipynb"):
        title = _notebook_title(path)
    else:
        title = next(ln[2:].strip() for ln in path.read_text().splitlines() if ln.startswith("# "))

    requests: list[str] = []
    outside: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    page = context.new_page()

    def on_request(request) -> None:
        requests.append(request.url)
        parts = urlsplit(request.url)
        local = parts.scheme in {"data", "blob", "about", "file"} or (
            parts.scheme in {"http", "https"} and parts.hostname == "127.0.0.1"
        )
        if not local:
            outside.append(request.url)

    # Nothing leaves the machine even if the page asks: record, then abort every outside request.
    def route(route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in {"http", "https"} and parts.hostname != "127.0.0.1":
            route.abort()
        else:
            route.continue_()

    context.route("**/*", route)
    page.on("request", on_request)
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))

    def on_response(response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            failed.append(f"{response.url} (HTTP {response.status})")

    page.on("response", on_response)
    page.on("pageerror", lambda e: errors.append(str(e)))

    try:
        page.goto(f"{server}/{rel}", wait_until="load", timeout=TIMEOUT_MS)

        # Title: the page's <h1> and the <title> carry the notebook's "# Title".
        h1 = page.locator("article h1, main h1").first.inner_text(timeout=TIMEOUT_MS)
        assert title in h1, f"page heading {h1!r} does not contain the title {title!r}"
        assert title in page.title(), f"<title> {page.title()!r} does not contain {title!r}"

        if full:
            # An equation typeset by the vendored MathJax (CHTML output), with its fonts.
            page.wait_for_selector("mjx-container", state="attached", timeout=TIMEOUT_MS)
            assert page.locator("mjx-container").count() >= 1
            assert page.evaluate("() => !!(window.MathJax && window.MathJax.startup)"), "no MathJax"

            # A figure: an image in the article that actually decoded.
            page.wait_for_function(
                """() => [...document.querySelectorAll('article img, main img')]
                        .some(i => i.complete && i.naturalWidth > 0)""",
                timeout=TIMEOUT_MS,
            )

            # The widget, rendered by the widget manager from the embedded state (static).
            page.wait_for_selector(
                ".jupyter-widgets .widget-slider, .widget-slider",
                state="visible",
                timeout=TIMEOUT_MS,
            )
            widget = page.locator(".jupyter-widgets").first
            widget.scroll_into_view_if_needed()
            widget.screenshot(path=str(BUILD / f"screenshot-{path.stem}-widget.png"))

        page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(BUILD / f"screenshot-{path.stem}.png"))
    finally:
        context.close()

    assert requests, "the page made no request at all: was it served?"
    assert not outside, "requests left the machine:\n" + "\n".join(outside)
    assert not failed, "requests failed:\n" + "\n".join(failed)
    unexpected = [e for e in errors if not any(k in e for k in KNOWN_PAGE_ERRORS)]
    assert not unexpected, "JavaScript errors on the page:\n" + "\n".join(unexpected)


# What a reader must never see: the project's own process, and paths of the machine that built it.
FORBIDDEN = [
    (r"NOTES\.md", "a citation of NOTES.md"),
    (r"(?i)project notes", "'project notes'"),
    (r"TEMPORARY", "'TEMPORARY'"),
    (r"(?i)\bthe issue'?s?\b|issue tracker", "the issue tracker"),
    (r"(?<![\w.:/])/(work|tmp|root|home)/", "a path of the build machine"),
]
EXECUTED = re.compile(r"Executed in (quick|full) mode on .+ weights, dilran-lite \S+")


def _toc_sources() -> list[str]:
    """Every page of _toc.yml, as a path relative to the repository (with its suffix)."""
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    files: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node or "root" in node:
                files.append(str(node.get("file") or node.get("root")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc)
    out = []
    for name in files:
        stem = name.removesuffix(".md").removesuffix(".ipynb")
        for suffix in (".ipynb", ".md"):
            if (REPO / f"{stem}{suffix}").is_file():
                out.append(f"{stem}{suffix}")
                break
    return out


@pytest.mark.parametrize("source", _toc_sources())
def test_page_speaks_to_readers(source: str, server: str, browser) -> None:
    """Chapter pages say how they were executed; no page cites the project's own process or a
    path of the build machine."""
    rel = Path(source).with_suffix(".html").as_posix()
    context = browser.new_context(service_workers="block")
    context.route(
        "**/*",
        lambda r: (
            r.abort()
            if urlsplit(r.request.url).hostname not in {None, "", "127.0.0.1"}
            else r.continue_()
        ),
    )
    page = context.new_page()
    try:
        page.goto(f"{server}/{rel}", wait_until="load", timeout=TIMEOUT_MS)
        text = page.locator("main").inner_text(timeout=TIMEOUT_MS)
    finally:
        context.close()
    found = [f"{what}: ...{text[max(m.start() - 60, 0):m.end() + 60]!r}..."
             for pattern, what in FORBIDDEN for m in [re.search(pattern, text)] if m]  # fmt: skip
    assert not found, f"{rel} shows:\n" + "\n".join(found)
    if source.startswith("notebooks/"):
        assert EXECUTED.search(text), f"{rel} does not say how it was executed (run `make execute`)"
