#!/usr/bin/env bash
# Installs OpenSSH's sshd for the SFTP backend tests (tests/backend_servers.py starts it on
# 127.0.0.1 with a temporary configuration and keys). Debian, as root; a no-op when present.
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q --no-install-recommends openssh-server
mkdir -p /run/sshd
