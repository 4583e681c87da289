"""The built book in a real browser: headless Chromium (Debian's package) driven by Playwright.

Builds the book into _build/html when a source is newer than the last build (the notebooks are
rendered with the outputs saved in them: execute_notebooks is off in _config.yml), serves
_build/html on 127.0.0.1, opens a chapter page and checks that the title, an equation rendered by
the vendored MathJax, a figure and the static explorer's slider are there,
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


# (source, expects an equation, a figure and the explorer). Chapter 7 holds the W1 explorer.
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
        if response.status >= 400:
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

            # The static explorer (chapter 7's live widget is left out of the web page): its
            # slider, drawn by the page's own script.
            page.wait_for_selector(
                ".dilran-static-explorer input[type=range]", state="visible", timeout=TIMEOUT_MS
            )
            widget = page.locator(".dilran-static-explorer").first
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


# What the reader's report found on the pages: words about how the book was made (outside the
# pages that state such facts as facts of a measurement: running.md and the benchmarks chapter).
MAKING_OF = [
    (r"(?i)busy machine", "'busy machine'"),
    (r"(?i)shared CPU|CPU cores? (that were |)shared|\(shared, busy\)", "'shared CPU cores'"),
    (r"(?i)not yet measured", "'not yet measured'"),
    (
        r"(?i)not available offline|(VGG16|weights)[^.]{0,40}\boffline\b",
        "'... not available offline'",
    ),
    (
        r"(?i)still a placeholder|weights were[^.]{0,20}placeholder",
        "'weights were still a placeholder'",
    ),
    (r"(?i)\(_vendor\)|pages built offline", "the build footer '(_vendor)'"),
]
MAKING_OF_ALLOWED = ("book/running.md", "benchmarks")

# Measured in the browser: tables wider than the text column (outside a box that scrolls), output
# images without a caption, "NaN" in a table cell, text outputs cut at the column's edge.
_LAYOUT_JS = """() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  const column = article.getBoundingClientRect();
  const scrolls = (el) => {
    for (let p = el.parentElement; p && p !== article; p = p.parentElement) {
      const s = getComputedStyle(p);
      const fits = p.getBoundingClientRect().width <= column.width + 1;
      if (['auto', 'scroll'].includes(s.overflowX) && fits) return true;
    }
    return false;
  };
  const wide = [...article.querySelectorAll('table')]
    .filter(t => t.getBoundingClientRect().width > column.width + 1 && !scrolls(t))
    .map(t => `${Math.round(t.getBoundingClientRect().width)} px > ${Math.round(column.width)} px: `
              + t.innerText.slice(0, 80).replace(/\\s+/g, ' '));
  const uncaptioned = [...article.querySelectorAll('div.cell_output img')]
    .filter(i => !i.closest('.jupyter-widgets, .dilran-static-explorer'))
    .filter(i => { const f = i.closest('figure');
                   const c = f && f.querySelector('figcaption .caption-text');
                   return !(c && c.innerText.trim().length > 10); })
    .map(i => { const sec = i.closest('section');
                return `an image in section #${sec ? sec.id : '?'}`; });
  const nan = [...article.querySelectorAll('td, th')]
    .filter(c => /\\bNaN\\b/.test(c.innerText))
    .map(c => c.closest('table').innerText.slice(0, 60).replace(/\\s+/g, ' '));
  const cut = [...article.querySelectorAll('div.cell.tag_remove-input div.cell_output pre')]
    .filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => p.innerText.slice(0, 80));
  return {wide, uncaptioned, nan: [...new Set(nan)], cut};
}"""


def _open(browser, server: str, source: str):
    """A 1280-px page of the served book (nothing outside 127.0.0.1 is fetched), with the list of
    its requests that failed or got an HTTP error."""
    rel = Path(source).with_suffix(".html").as_posix()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    context.route(
        "**/*",
        lambda r: (
            r.abort()
            if urlsplit(r.request.url).hostname not in {None, "", "127.0.0.1"}
            else r.continue_()
        ),
    )
    page = context.new_page()
    failed: list[str] = []
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.url} ({r.status})"))
    page.goto(f"{server}/{rel}", wait_until="load", timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    return context, page, failed


@pytest.mark.parametrize("source", _toc_sources())
def test_page_reads_well(source: str, server: str, browser) -> None:
    """At 1280 px: no table wider than the text column unless it scrolls in its own box, every
    output image of a chapter is a numbered figure with a caption, no NaN in a table, no text
    output of a hidden cell (the "Executed in" line) cut at the column, no word about how the book
    was made, and no request that fails (the favicon included)."""
    context, page, failed = _open(browser, server, source)
    try:
        found = page.evaluate(_LAYOUT_JS)
        text = page.locator("main").inner_text(timeout=TIMEOUT_MS)
        text += page.locator("footer").first.inner_text() if page.locator("footer").count() else ""
    finally:
        context.close()
    problems = [f"table wider than the text column: {w}" for w in found["wide"]]
    if source.startswith("notebooks/"):
        problems += [f"figure without a caption (mystnb.figure metadata): {u!r}"
                     for u in found["uncaptioned"]]  # fmt: skip
    problems += [f"NaN in a table: {t!r}" for t in found["nan"]]
    problems += [f"text output cut at the column: {t!r}" for t in found["cut"]]
    if not any(a in source for a in MAKING_OF_ALLOWED):
        hits = [(what, m) for pattern, what in MAKING_OF for m in [re.search(pattern, text)] if m]
        problems += [f"{w}: ...{text[max(m.start() - 50, 0) : m.end() + 50]!r}..." for w, m in hits]
    problems += [f"request failed: {f}" for f in failed]
    assert not problems, f"{source}:\n" + "\n".join(problems)


def _numbered_chapters() -> list[tuple[int, str]]:
    """(number, title) of every chapter in the numbered parts of _toc.yml, in order."""
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    files = [c["file"] for part in toc["parts"] if part.get("numbered") for c in part["chapters"]]
    out = []
    for number, name in enumerate(files, start=1):
        path = REPO / f"{name}.ipynb"
        if path.is_file():
            title = _notebook_title(path)
        else:
            lines = (REPO / f"{name}.md").read_text(encoding="utf-8").splitlines()
            title = next(ln[2:].strip() for ln in lines if ln.startswith("# "))
        out.append((number, title))
    return out


def test_intro_lists_every_chapter(server: str, browser) -> None:
    """The intro's table names every numbered chapter of _toc.yml with its number, and its link
    leads to the chapter whose sidebar number is the same."""
    context, page, _ = _open(browser, server, "book/intro.md")
    try:
        rows = page.evaluate(
            """() => [...document.querySelectorAll('article table tr')].map(tr =>
                 [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))"""
        )
        sidebar = page.evaluate(
            "() => [...document.querySelectorAll('nav.bd-links a')].map(a => a.innerText.trim())"
        )
    finally:
        context.close()
    listed = {r[0]: r[1] for r in rows if len(r) == 2}
    wrong = []
    for number, title in _numbered_chapters():
        if listed.get(str(number)) != title:
            wrong.append(f"chapter {number} {title!r}: the intro says {listed.get(str(number))!r}")
        if f"{number}. {title}" not in sidebar:
            wrong.append(f"chapter {number} {title!r} is not numbered {number} in the sidebar")
    assert not wrong, "\n".join(wrong)


def test_live_explorer_not_on_static_page(server: str, browser) -> None:
    """Chapter 7 on the web page: no saved-state copy of the live explorer (its controls would not
    respond without a kernel); the static explorer responds to its controls, and one line says
    where the live one runs."""
    context, page, _ = _open(browser, server, "notebooks/07_fusion_strategies.ipynb")
    try:
        assert page.locator(".jupyter-widgets .widget-dropdown").count() == 0, (
            "the live explorer's saved state is on the page (tag its cell remove-output)"
        )
        root = page.locator(".dilran-static-explorer").first
        root.scroll_into_view_if_needed()
        fused = root.locator("img[data-role=fused]")
        before = fused.get_attribute("src")
        root.locator("input[data-role=w1]").fill("0")
        assert fused.get_attribute("src") != before, "the static explorer's slider changes nothing"
        root.screenshot(path=str(BUILD / "screenshot-07-static-explorer.png"))
        text = page.locator("main").inner_text()
    finally:
        context.close()
    assert re.search(r"(?i)live[^.]*(Jupyter|Colab)", text), (
        "no line says where the live explorer runs"
    )
