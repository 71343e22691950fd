#!/usr/bin/env bash
# Installs the artifactd server (artifactd-server from server/, with the client from client/) into
# .venv and starts it on its embedded defaults: 127.0.0.1:50051, artifacts in ./mlruns, SQLite.
# Extra arguments go to `artifactd serve` (see `artifactd serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q ./client ./server
exec "$VENV/bin/artifactd" serve "$@"
