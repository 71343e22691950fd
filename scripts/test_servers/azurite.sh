#!/usr/bin/env bash
# Installs Microsoft's Azurite (npm) into .tools/ for the Azure Blob backend tests
# (tests/backend_servers.py starts .tools/node_modules/.bin/azurite-blob on 127.0.0.1 with a
# temporary --location). A no-op when present. Azurite 3.37 declares node>=22 but runs on node 20.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -x .tools/node_modules/.bin/azurite-blob ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -q --no-install-recommends nodejs npm
fi
mkdir -p .tools
(cd .tools && npm install --no-audit --no-fund --silent azurite@3.37.0)
