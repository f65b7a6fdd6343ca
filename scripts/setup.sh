#!/usr/bin/env bash
# Idempotent set-up: Debian's Fashion-MNIST (when root and apt is there), a virtual environment
# .venv at the repository root, and the package with its pinned dependencies installed editable.
# A second run is quick: it re-installs only when pyproject.toml changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian package dataset-fashion-mnist" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
        || echo "setup: could not install dataset-fashion-mnist; training needs it, the demo does not" >&2
fi

# pip with its output kept out of sight unless it fails (this machine's local indexes warn a lot).
quiet_pip() {
    local log
    log=$(mktemp)
    if ! .venv/bin/pip --disable-pip-version-check "$@" >"$log" 2>&1; then
        grep -v "is ignored: it is neither" "$log" >&2
        rm -f "$log"
        echo "setup: pip $* failed" >&2
        exit 1
    fi
    rm -f "$log"
}

# `setup.sh test` (what `make test` runs) also installs Debian's Chromium, with which the test
# suite renders report.html headless and offline; without it that one test is skipped.
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian package chromium (report rendering test)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "setup: could not install chromium; the report rendering test will be skipped" >&2
fi

# The noisy path's compiled loop (core/engine/native.py) needs a C compiler (cc, gcc or clang).
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then
    echo "setup: no C compiler (cc): noisy runs will use their eager code (same results, slower)" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.setup-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    quiet_pip install torch==2.13.0
    quiet_pip install -e ".[dev]"
    echo "$want" > "$stamp"
fi
