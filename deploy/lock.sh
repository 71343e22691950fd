#!/usr/bin/env bash
# Regenerates the pinned, hashed dependency locks the container image installs from:
#   deploy/requirements.lock        the runtime dependencies of the two distributions the image
#                                   installs: client/ (artifactd) and server/ (artifactd-server)
#                                   with the extras in IMAGE_EXTRAS (the Dockerfile names the same)
#   deploy/build-requirements.lock  their [build-system] requires (setuptools, wheel)
# Both are resolved for CPython 3.11 on Linux (the image's base, see Dockerfile's PYTHON_IMAGE),
# with the sha256 of every file of each pinned release, so `pip install --require-hashes`
# works on any architecture the release ships wheels for (amd64, arm64).
#
# Run it after changing a dependency range in client/ or server/pyproject.toml, or to pick up new releases:
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

# The requirements of both pyproject.toml files (the server's pin on the client itself left out:
# the image builds the client from this tree), with the image's extras.
IMAGE_EXTRAS=${IMAGE_EXTRAS:-s3,gcs,azure,azure-identity,sftp,postgres,mysql}
IMAGE_EXTRAS="$IMAGE_EXTRAS" "$PYTHON" - "$work" <<'PY'
import os, re, sys, tomllib
work = sys.argv[1]
client = tomllib.load(open("client/pyproject.toml", "rb"))
server = tomllib.load(open("server/pyproject.toml", "rb"))
extras = [e for e in os.environ["IMAGE_EXTRAS"].split(",") if e]
runtime = [*client["project"]["dependencies"]]
runtime += [r for r in server["project"]["dependencies"] if not re.match(r"artifactd\b", r)]
for extra in extras:
    runtime += server["project"]["optional-dependencies"][extra]
build = sorted({*client["build-system"]["requires"], *server["build-system"]["requires"]})
open(f"{work}/requirements.in", "w").write("\n".join(runtime) + "\n")
open(f"{work}/build-requirements.in", "w").write("\n".join(build) + "\n")
PY

compile() {
  "$work/venv/bin/pip-compile" --quiet --strip-extras --generate-hashes --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --resolver=backtracking "$@"
}
top=$PWD
# From the work folder, so the locks say "via -r requirements.in", not a temporary path.
(cd "$work" && compile --output-file "$top/deploy/requirements.lock" "${@}" requirements.in)
(cd "$work" && compile --output-file "$top/deploy/build-requirements.lock" "${@}" \
  build-requirements.in)
# pip-compile records the command it was run as; name this script instead.
for lock in deploy/requirements.lock deploy/build-requirements.lock; do
  sed -i 's|^#    pip-compile .*|#    deploy/lock.sh|' "$lock"
done
echo "wrote deploy/requirements.lock and deploy/build-requirements.lock"
