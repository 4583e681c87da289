#!/usr/bin/env bash
# Vendor the JavaScript the built book needs at view time, so that it renders without any CDN:
#   _vendor/mathjax/  MathJax 3 (tex-mml-chtml.js + its woff-v2 fonts)
#   _vendor/widgets/  require.js and the Jupyter widgets HTML manager (embed-amd.js + fonts)
# The files come from the npm registry (npm pack, no install, no node_modules left behind).
# Idempotent: does nothing when the files are already there (FORCE=1 re-downloads them).
set -euo pipefail

MATHJAX_VERSION="${MATHJAX_VERSION:-3.2.2}"
HTML_MANAGER_VERSION="${HTML_MANAGER_VERSION:-1.0.6}"
REQUIREJS_VERSION="${REQUIREJS_VERSION:-2.3.4}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/_vendor"
STAMP="$VENDOR/.versions"
LAYOUT=3  # bump when the files written below change
WANT="layout$LAYOUT mathjax@$MATHJAX_VERSION html-manager@$HTML_MANAGER_VERSION requirejs@$REQUIREJS_VERSION"

if [[ "${FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" \
      && -f "$VENDOR/mathjax/tex-mml-chtml.js" && -f "$VENDOR/widgets/require.js" \
      && -f "$VENDOR/widgets/embed-amd.js" && -f "$VENDOR/widgets/require-config.js" ]]; then
    echo "vendor_assets: _vendor/ already holds $WANT; nothing to do"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "vendor_assets: ERROR: npm is not installed. The book vendors MathJax and the widget" >&2
    echo "  manager from the npm registry so that its pages render without a CDN." >&2
    echo "  Install Node.js/npm (Debian: apt-get install -y npm) and run 'make book' again." >&2
    exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
echo "vendor_assets: fetching $WANT from the npm registry"
for spec in "mathjax@$MATHJAX_VERSION" "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" \
            "requirejs@$REQUIREJS_VERSION"; do
    tgz="$(npm pack --silent "$spec" 2>/dev/null | tail -n 1)"
    if [[ -z "$tgz" || ! -f "$tgz" ]]; then
        echo "vendor_assets: ERROR: 'npm pack $spec' failed (is the npm registry reachable?)" >&2
        exit 1
    fi
    name="${spec%@*}"; name="${name##*/}"
    mkdir -p "$name"
    tar -xzf "$tgz" -C "$name" --strip-components=1
done

NEW="$TMP/_vendor"
mkdir -p "$NEW/mathjax/output/chtml/fonts" "$NEW/widgets"
cp mathjax/es5/tex-mml-chtml.js "$NEW/mathjax/"
cp -r mathjax/es5/output/chtml/fonts/woff-v2 "$NEW/mathjax/output/chtml/fonts/"
cp requirejs/require.js "$NEW/widgets/"
# embed-amd.js loads its font files relative to itself (dist/*.woff, *.ttf, ...).
cp html-manager/dist/embed-amd.js "$NEW/widgets/"
find html-manager/dist -maxdepth 1 -type f \
    \( -name '*.woff' -o -name '*.woff2' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
    -exec cp {} "$NEW/widgets/" \;
# widgets/require-config.js, loaded between require.js and embed-amd.js, fixes two things:
# 1. embed-amd.js takes its public path (where its fonts are) from its AMD module id, which
#    require.js resolves against the page: map that id to the folder of require.js, so that every
#    page, at any depth, loads the fonts from _static/widgets/.
# 2. The widget manager typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue); the book
#    loads MathJax 3: give it a small MathJax.Hub that forwards to MathJax 3's typesetPromise.
cat > "$NEW/widgets/require-config.js" <<'JS'
(function () {
  var script = document.querySelector('script[src*="widgets/require.js"]');
  if (script && window.require) {
    var base = script.src.replace(/\/require\.js(\?.*)?$/, "");
    window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": base } });
  }
  function typeset(element) {
    var mj = window.MathJax;
    if (!mj || !mj.startup || !mj.startup.promise) { return; }
    mj.startup.promise
      .then(function () { return mj.typesetPromise(element ? [element] : undefined); })
      .catch(function (err) { console.warn("MathJax typeset of a widget failed", err); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (window.MathJax && !window.MathJax.Hub) {
      window.MathJax.Hub = {
        Queue: function (job) { typeset(job && job[2]); }
      };
    }
  });
})();
JS
for f in mathjax/LICENSE html-manager/LICENSE* requirejs/LICENSE*; do
    [[ -f "$f" ]] && cp "$f" "$NEW/$(basename "$(dirname "$f")")-$(basename "$f")"
done
echo "$WANT" > "$NEW/.versions"

rm -rf "$VENDOR"
mv "$NEW" "$VENDOR"
echo "vendor_assets: wrote $(find "$VENDOR" -type f | wc -l) files to _vendor/ ($(du -sh "$VENDOR" | cut -f1))"
