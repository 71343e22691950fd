#!/usr/bin/env bash
# Makes sure the PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) servers the backend-store
# tests use are up. On this project's machines both are installed from Debian's packages and
# normally already running; when one is installed but stopped, it is started here (as root) with
# the same commands the machine uses. When one is missing, this says so and the store tests fail
# with a message naming it: they never skip.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  return 1
}

if ! port_open 5432; then
  if ls /etc/postgresql >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    wait_port 5432 || echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
  else
    echo "PostgreSQL is not installed: the PostgreSQL store tests will fail" >&2
  fi
fi

if ! port_open 3306; then
  if [ -x /usr/sbin/mariadbd ]; then
    echo "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    wait_port 3306 || echo "MariaDB did not come up on 127.0.0.1:3306" >&2
  else
    echo "MariaDB is not installed: the MariaDB store tests will fail" >&2
  fi
fi
exit 0
