#!/usr/bin/env bash
# Install Debian's Chromium for the headless browser test (tests/test_book_browser.py).
# Idempotent: does nothing when /usr/bin/chromium (or $CHROMIUM) already exists.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]]; then
    echo "install_chromium: $CHROMIUM is already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_chromium: ERROR: $CHROMIUM is missing and this user is not root." >&2
        echo "  Install it once as root:  apt-get update && apt-get install -y chromium" >&2
        echo "  (or point CHROMIUM=/path/to/chromium at an existing build), then run 'make browser' again." >&2
        exit 1
    fi
else
    SUDO=""
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: ERROR: no apt-get here; install Chromium with your system's package manager" >&2
    echo "  and set CHROMIUM=/path/to/chromium." >&2
    exit 1
fi

echo "install_chromium: installing Debian's chromium package (about a minute)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "install_chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
