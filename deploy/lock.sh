#!/usr/bin/env bash
# Regenerates the pinned, hashed dependency locks the container image installs from:
#   deploy/requirements.lock        the runtime dependencies of pyproject.toml's [project]
#   deploy/build-requirements.lock  pyproject.toml's [build-system] requires (setuptools, wheel)
# Both are resolved for CPython 3.11 on Linux (the image's base, see Dockerfile's PYTHON_IMAGE),
# with the sha256 of every file of each pinned release, so `pip install --require-hashes`
# works on any architecture the release ships wheels for (amd64, arm64).
#
# Run it after changing a dependency range in pyproject.toml, or to pick up new releases:
#   deploy/lock.sh                 # keep current pins where the ranges still allow them
#   deploy/lock.sh --upgrade       # newest releases within the ranges
# It needs Python 3.11 (PYTHON=...) and the package index; pip-tools runs from a throw-away venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"deploy/lock.sh: needs Python 3.11 (the image's), not {sys.version.split()[0]}; set PYTHON")
PY

PIP_TOOLS_VERSION=7.6.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only the package index: no local wheel folders or extra indexes from this machine's pip config.
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_NO_INDEX
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "pip-tools==$PIP_TOOLS_VERSION"

compile() {
  "$work/venv/bin/pip-compile" --quiet --strip-extras --generate-hashes --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --resolver=backtracking "$@"
}
compile --output-file deploy/requirements.lock "${@}" pyproject.toml
compile --output-file deploy/build-requirements.lock --all-build-deps --only-build-deps \
  "${@}" pyproject.toml
# pip-compile records the command it was run as; name this script instead.
for lock in deploy/requirements.lock deploy/build-requirements.lock; do
  sed -i 's|^#    pip-compile .*|#    deploy/lock.sh|' "$lock"
done
echo "wrote deploy/requirements.lock and deploy/build-requirements.lock"
