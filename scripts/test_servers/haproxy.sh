#!/usr/bin/env bash
# Installs haproxy (Debian's 2.6) for the replica tests and the scale-out benchmark
# (tests/test_replicas.py, bench/scale_bench.py render deploy/haproxy/haproxy.cfg with their own
# ports and run it on 127.0.0.1). Debian, as root; a no-op when present.
set -euo pipefail
if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q --no-install-recommends haproxy
# The package enables a system service with its own config; the tests run their own processes.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
