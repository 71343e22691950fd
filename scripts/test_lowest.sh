#!/usr/bin/env bash
# The suite again with every dependency of both distributions at the LOWEST version its range in
# client/pyproject.toml and server/pyproject.toml allows (scripts/test.sh runs it at the newest),
# so each range claimed is one CI has exercised at both ends. uv resolves the lowest versions of
# our direct dependencies (`--resolution lowest-direct`); pip installs exactly that lock.
# The test servers (moto, pyftpdlib, gcp-storage-emulator) run from the development venv, so
# their own requirements do not move the versions under test. Not run here: the packaging and
# deployment checks, the polyglot clients and the MLflow plugin (scripts/test_mlflow.sh runs the
# plugin on mlflow 3.17, the low end of its range; the development venv has the newest), nor the
# long reliability runs on the server's own code (fuzzing and the path grammar's property
# tests, which need the dev tool Hypothesis, the 2-minute soak and the crash points; the storage
# outages, which lean on the storage libraries' retries, do run here).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEV=${VENV:-.venv}
LOWEST=${VENV_LOWEST:-.venv-lowest}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

printf '\n== lowest dependency versions (%s)\n' "$LOWEST"
[ -x "$LOWEST/bin/python" ] || "$PYTHON" -m venv "$LOWEST"
"$LOWEST/bin/python" -m pip install -q --upgrade pip
printf 'artifactd @ file://%s/client\nartifactd-server[all] @ file://%s/server\npytest>=9,<10\npytest-timeout>=2.3,<3\n' \
  "$PWD" "$PWD" > "$WORK/lowest.in"
find_links=()
[ -n "${PIP_FIND_LINKS:-}" ] && find_links=(--find-links "$PIP_FIND_LINKS")
"$DEV/bin/uv" pip compile -q --resolution lowest-direct --python "$LOWEST/bin/python" \
  "${find_links[@]}" -o "$WORK/lowest.txt" "$WORK/lowest.in"
grep -E '^(alembic|azure|boto3|click|crc32c|cryptography|fsspec|google-cloud-storage|grpcio|paramiko|prometheus|protobuf|psycopg|pyarrow|pyjwt|pymysql|sqlalchemy|tqdm|urllib3)' \
  "$WORK/lowest.txt" | tr '\n' ' '
echo
"$LOWEST/bin/python" -m pip install -q --no-deps --force-reinstall -r "$WORK/lowest.txt"
"$LOWEST/bin/python" -m pip check

printf '\n== pytest at the lowest versions\n'
ARTIFACTD_TEST_SERVERS_PYTHON="$PWD/$DEV/bin/python" "$LOWEST/bin/python" -m pytest -p no:cacheprovider -q \
  --ignore=tests/mlflow_server --ignore=tests/test_mlflow_plugin.py \
  --ignore=tests/test_mlflow_repository_parity.py --ignore=tests/test_distributions.py \
  --ignore=tests/test_deploy.py --ignore=tests/test_polyglot.py \
  --ignore=tests/test_fuzz.py --ignore=tests/test_path_properties.py --ignore=tests/test_soak.py --ignore=tests/test_crash_points.py "$@"
