#!/usr/bin/env bash
# Builds (and so type-checks) the TypeScript and Go clients with their roundtrip examples,
# offline. Needs scripts/install_clients.sh first.
#   TypeScript: tsc -p client/typescript (strict) -> client/typescript/dist/;
#               run: node client/typescript/dist/examples/roundtrip.js [OPTIONS] FILE OUT [PATH]
#   Go:         go vet + go build -> client/go/bin/roundtrip; run: client/go/bin/roundtrip ...
#
# How Go builds without a module proxy: client/go/go.mod names the module versions an online
# build resolves (go mod tidy there writes go.sum). Offline, Debian's source packages stand in
# for them: this script fills client/go/vendor/ (not in git) with links into
# /usr/share/gocode/src, one per module go.mod requires, writes vendor/modules.txt from go.mod,
# and builds with -mod=vendor and GOPROXY=off, so nothing is fetched and go.sum is not needed.
# The sources are bookworm's (grpc-go 1.33.3, protobuf-go 1.28.1, golang/protobuf 1.5.2,
# x/net 0.7.0, x/sys 0.3.0, x/text 0.7.0, genproto of 2020-04-13) under go.mod's version labels;
# Go reads the package sources, not the labels. GOPATH mode (GO111MODULE=off with
# GOPATH=<tmp>:/usr/share/gocode, as Debian's own builds do) works too but ignores go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."
GOCODE=${GOCODE:-/usr/share/gocode/src}

step() { printf '%s\n' "-- $*"; }

step "typescript: tsc"
(cd client/typescript && node_modules/.bin/tsc -p .)

step "go: vendor/ from $GOCODE"
command -v go >/dev/null || { echo "build_clients.sh: no go; run scripts/install_clients.sh" >&2; exit 1; }
cd client/go
rm -rf vendor
mkdir vendor
# "module version" for every requirement of go.mod, direct and indirect
awk '/^require \($/{block=1; next} block && /^\)/{block=0; next}
     block && NF>=2 {print $1, $2} /^require [^(]/{print $2, $3}' go.mod |
while read -r module version; do
  source="$GOCODE/$module"
  if [ ! -d "$source" ]; then
    echo "build_clients.sh: $source is missing (Debian package for $module); run scripts/install_clients.sh" >&2
    exit 1
  fi
  mkdir -p "vendor/$(dirname "$module")"
  ln -s "$source" "vendor/$module"
  go_version=$(awk '$1=="go"{print $2; exit}' "$source/go.mod" 2>/dev/null || true)
  printf '# %s %s\n## explicit%s\n' "$module" "$version" "${go_version:+; go $go_version}" >>vendor/modules.txt
done

step "go: vet, build"
export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GO111MODULE=on
go vet ./...
go build -o bin/roundtrip ./cmd/roundtrip
