#!/usr/bin/env bash
# Set everything up, then run the main job: train a baseline and a smooth ResNet-18 on Fashion-MNIST
# (the full set when installed, else the embedded subset; the report says which), run the five
# notebooks and write reports/<run-id>/index.html, whose path it prints last. Extra arguments go to
# `python -m smoothviz report` (e.g. --preset full, -p epochs=6).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m smoothviz report "$@"
