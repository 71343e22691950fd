#!/usr/bin/env bash
# Installs everything the test suite needs and runs all of it: generated-code check (Python,
# TypeScript and Go clients), buf lint and buf breaking, the Dockerfile and Kubernetes manifests
# lint, the import-layer contracts, ruff, mypy and pytest (real server processes on 127.0.0.1; the
# machine's PostgreSQL and MariaDB, started by scripts/ensure_databases.sh if stopped), then
# scripts/test_mlflow.sh (real `mlflow server` processes and the UI in headless Chromium). Works on a fresh machine with
# Python >= 3.11; installs Node.js/npm from Debian when missing (for buf), as root.
# Extra arguments go to the main pytest run, e.g. scripts/test.sh -k listing
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

step() { printf '\n== %s\n' "$*"; }

step "python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Both distributions, editable, and the workspace's dev group (tools, test servers, mlflow-skinny)
"$VENV/bin/python" -m pip install -q -e ./client -e "./server[all]" --group dev

step "buf (npm)"
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -q --no-install-recommends nodejs npm
fi
if [ ! -x .tools/node_modules/.bin/buf ]; then
  mkdir -p .tools
  (cd .tools && npm install --no-audit --no-fund --silent @bufbuild/buf@1.75.0)
fi

step "client toolchains (Go from Debian, npm ci in client/typescript)"
scripts/install_clients.sh

step "generated stubs are up to date"
PYTHON="$VENV/bin/python" scripts/gen_protos.sh
GENERATED=(client/artifactd/v1 client/typescript/src/gen client/go/artifactdv1)
if [ -d .git ] && [ -n "$(git status --porcelain -- "${GENERATED[@]}")" ]; then
  git status --porcelain -- "${GENERATED[@]}"
  git --no-pager diff --stat -- "${GENERATED[@]}"
  echo "Generated code is out of date: run scripts/gen_protos.sh and commit the result." >&2
  exit 1
fi

step "buf lint"
.tools/node_modules/.bin/buf lint

step "buf breaking (against the previous commit)"
# An incompatible change to protos/ fails here; version it instead (a new package, e.g.
# artifactd.v2, next to v1). Needs the previous commit: a shallow or single-commit clone has none.
if [ -d .git ] && git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
  .tools/node_modules/.bin/buf breaking --against '.git#ref=HEAD~1'
else
  echo "skipped: no previous commit in this checkout (not a git clone, or a shallow or single-commit one)"
fi

step "deployment: hadolint on the Dockerfile, kubernetes-validate on deploy/kubernetes"
VENV="$VENV" scripts/lint_deploy.sh

step "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

step "mypy"
# the generated artifactd.v1 stubs are left out (checked-in .pyi files type them for users)
"$VENV/bin/mypy" -p artifactd_server -p artifactd.client -p artifactd.cli -p artifactd.mlflow \
  -p artifactd.protocol -p artifactd.filesystem

step "layers (import-linter: .importlinter)"
# the client never imports the server; each distribution's folders depend only downward
"$VENV/bin/lint-imports"

step "docs: generated pages current, mkdocs build --strict"
# The configuration and protobuf references and the benchmark tables are generated and committed:
# a change to the settings tables, protos/ or bench/results/ without regenerating fails here.
"$VENV/bin/python" scripts/gen_config_docs.py --check
"$VENV/bin/python" scripts/gen_proto_docs.py --check
"$VENV/bin/python" bench/plot_results.py --check
DOCS_SITE=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$DOCS_SITE"
rm -rf "$DOCS_SITE"

step "database servers for the backend-store tests"
scripts/ensure_databases.sh

step "storage servers for the backend conformance tests"
for installer in scripts/test_servers/*.sh; do bash "$installer"; done

step "pytest"
# tests/mlflow_server needs full mlflow (tracking server, UI): its own virtualenv, below
"$VENV/bin/python" -m pytest --ignore=tests/mlflow_server "$@"

step "MLflow's tracking server and UI on artifactd (full mlflow beside ./client './server[all]')"
scripts/test_mlflow.sh

step "the suite at the lowest version of every dependency range (scripts/test_lowest.sh)"
VENV="$VENV" scripts/test_lowest.sh
