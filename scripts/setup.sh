#!/usr/bin/env bash
# Idempotent set-up: Debian packages (when root), the virtual environment .venv/ and the project in it.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run again (it skips what is already done).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOG="$ROOT/.venv-setup.log"

# Debian packages: the full Fashion-MNIST and Chromium for the browser test. Needs root; without it the
# data falls back to the embedded subset and the browser test reports itself skipped.
APT_PACKAGES=(dataset-fashion-mnist chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt-get update -qq >"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$LOG" 2>&1 \
            || { cat "$LOG"; exit 1; }
    else
        echo "setup: not root, skipping Debian packages: ${missing[*]}"
    fi
fi

# The virtual environment. torch and torchvision are installed together in one resolve so that pip
# picks a matching pair (see DEVELOPERS.md: a lone CPU torch wheel on this machine breaks torchvision).
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=".venv/.smoothviz-installed"
want="$(sha256sum pyproject.toml | cut -c1-64)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing smoothviz and its dependencies into .venv (a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip >"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
    .venv/bin/python -m pip install -q -e ".[test]" >>"$LOG" 2>&1 || { tail -50 "$LOG"; exit 1; }
    .venv/bin/python -c "import torch, torchvision; print('setup: torch', torch.__version__, 'torchvision', torchvision.__version__)"
    echo "$want" >"$stamp"
fi
