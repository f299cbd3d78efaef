#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default data. Extra arguments go to it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m smoothviz report "$@"
