#!/usr/bin/env bash
# MLflow's own tracking server and UI on artifactd (tests/mlflow_server), in the environment an
# MLflow user has: one virtualenv made with exactly `pip install mlflow ./client './server[all]'`
# (full mlflow, not mlflow-skinny), plus the test tools and Debian's Chromium for the UI test.
# Also runs the plugin's in-process tests there (full mlflow, and the low end of the pyarrow
# range that mlflow pins). Checks first that pip resolves a current mlflow both with the server
# and with the client alone: a silent backtrack to mlflow 1.x fails here.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_MLFLOW:-.venv-mlflow}
MINIMUM_MLFLOW=3.17

step() { printf '\n== %s\n' "$*"; }

step "Chromium and chromedriver (Debian) for the MLflow UI test"
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -q --no-install-recommends chromium chromium-driver
fi

step "MLflow virtualenv ($VENV): pip install mlflow ./client './server[all]'"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q mlflow ./client './server[all]'
"$VENV/bin/python" -m pip install -q "pytest>=9,<10" "pytest-timeout>=2.3,<3" "selenium>=4.20,<5"

step "the mlflow pip chose is current (>= $MINIMUM_MLFLOW), with the server and with the client alone"
"$VENV/bin/python" - "$MINIMUM_MLFLOW" <<'PY'
import json, subprocess, sys
from importlib.metadata import version
from packaging.version import Version

minimum = Version(sys.argv[1])
installed = Version(version("mlflow"))
print(f"installed beside ./client './server[all]': mlflow {installed}")
assert installed >= minimum, f"pip backtracked to mlflow {installed} (< {minimum})"
# The client alone, resolved as into an empty virtualenv (nothing installed is reused).
report = subprocess.run(
    [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
     "--report", "-", "mlflow", "./client"],
    check=True, capture_output=True, text=True,
).stdout
chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report)["install"]}
alone = Version(chosen["mlflow"])
print(f"resolved beside ./client alone: mlflow {alone}")
assert alone >= minimum, f"pip would backtrack to mlflow {alone} (< {minimum}) beside the client"
PY

step "pytest: tests/mlflow_server and the plugin's tests, on full mlflow"
"$VENV/bin/python" -m pytest -p no:cacheprovider tests/mlflow_server \
  tests/test_mlflow_plugin.py tests/test_mlflow_repository_parity.py "$@"
