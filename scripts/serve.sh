#!/usr/bin/env bash
# Installs artifactd into .venv and starts it on its embedded defaults: 127.0.0.1:50051, artifacts
# in ./mlruns. Extra arguments go to `artifactd serve` (see `artifactd serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q .
exec "$VENV/bin/artifactd" serve "$@"
