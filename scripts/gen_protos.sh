#!/usr/bin/env bash
# Regenerates the checked-in Python stubs (client/artifactd/v1/) from protos/.
# The one place generated code comes from; CI runs it and fails if the result differs from git.
# Needs grpcio-tools and mypy-protobuf at the versions pinned in pyproject.toml (their versions are
# stamped into the output), with the venv's bin/ on PATH for the protoc-gen-mypy plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PATH="$(dirname "$(command -v "$PY")"):$PATH"
OUT=client
rm -f "$OUT"/artifactd/v1/*_pb2*.py "$OUT"/artifactd/v1/*_pb2*.pyi
mkdir -p "$OUT/artifactd/v1"
"$PY" -m grpc_tools.protoc -I protos \
  --python_out="$OUT" --grpc_python_out="$OUT" \
  --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  protos/artifactd/v1/*.proto
touch "$OUT/artifactd/v1/py.typed"
