#!/usr/bin/env bash
# Installs what the TypeScript and Go clients need to be generated, built and tested, offline
# from any Go module proxy. Idempotent and quiet: a no-op when everything is there.
#   Go:         Debian's Go toolchain, grpc-go and protobuf-go sources (/usr/share/gocode) and the
#               protoc-gen-go / protoc-gen-go-grpc plugins, with apt-get as root when missing.
#               scripts/build_clients.sh builds against those sources (see there how).
#   TypeScript: `npm ci` in client/typescript (versions pinned in its package-lock.json; the
#               protoc-gen-es plugin comes from there too), again when the lock file changed.
# buf itself is installed by scripts/test.sh into .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."

# golang-github-golang-protobuf-1-5-dev: grpc-go 1.33 depends on "1-3 | 1-5"; 1.5 is the one
# that is a wrapper around google.golang.org/protobuf (the 1.3 API cannot marshal APIv2 messages).
GO_PACKAGES=(golang-go golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc)
missing=()
for package in "${GO_PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install_clients.sh: missing Debian packages ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -q --no-install-recommends nodejs npm
fi
# npm ci again whenever package-lock.json differs from the one the installed tree came from.
lock_sum=$(sha256sum client/typescript/package-lock.json | cut -d' ' -f1)
stamp=client/typescript/node_modules/.artifactd-lock-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
  (cd client/typescript && npm ci --no-audit --no-fund --silent)
  echo "$lock_sum" >"$stamp"
fi
