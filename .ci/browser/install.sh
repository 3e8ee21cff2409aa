#!/usr/bin/env bash
# Install Debian's Chromium for the report's browser tests (tests/test_browser.py).
#
# Playwright drives this system browser (executable_path=/usr/bin/chromium) and never
# downloads one. Idempotent and fast when Chromium is already there. Needs root (or
# sudo without a password). Exit status: 0 installed, 1 install failed, 2 cannot
# install here (no root, no apt-get).
set -euo pipefail

CHROMIUM=${CONVSCOPE_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    echo "browser install: already installed ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
    exit 0
fi
echo "browser install: $CHROMIUM missing; installing the chromium package"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser install: apt-get not found; install chromium by hand" >&2
    exit 2
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "browser install: not root and no password-less sudo; cannot install chromium" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get update -qq || ! "${sudo[@]}" apt-get install -y -qq chromium; then
    echo "browser install: apt-get install chromium failed" >&2
    exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "browser install: chromium installed but $CHROMIUM is missing" >&2
    exit 1
fi
echo "browser install: installed ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
