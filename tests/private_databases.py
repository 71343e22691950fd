"""Private PostgreSQL and MariaDB servers that a test may stop, kill and restart.

The machine's shared database servers (tests/databases.py) serve every other test; an outage test
must never stop those. These start a throwaway instance from the distribution's own binaries in
a temporary directory, on an ephemeral 127.0.0.1 port, and stop it by PID. A binary that is
missing or a server that does not come up is an error naming the reason: the tests fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from artifactd_server.store.database import normalize_uri


class PrivateDatabaseError(RuntimeError):
    """A private database server could not be set up, started or stopped."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str], doing: str) -> None:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise PrivateDatabaseError(f"{doing} failed ({done.returncode}): {done.stderr[-2000:]}")


class PrivateDatabase:
    """One database server process of our own; `uri` names database `artifactd` on it."""

    kind = ""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"artifactd-{self.kind}-"))
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        raise NotImplementedError

    @property
    def admin_uri(self) -> str:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Creates the data directory (once)."""

    def _create_database(self) -> None:
        engine = create_engine(
            normalize_uri(self.admin_uri), isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        with engine.connect() as connection:
            connection.execute(text("CREATE DATABASE artifactd"))
        engine.dispose()

    def start(self, timeout: float = 60.0) -> None:
        """Starts the server (preparing its data directory the first time) and waits until it
        answers a query."""
        first = not (self.base / "data").exists()
        if first:
            self._prepare()
        log = open(self.base / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(self._command(), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        engine = create_engine(normalize_uri(self.admin_uri), poolclass=NullPool)
        try:
            while True:
                if self.process.poll() is not None:
                    raise PrivateDatabaseError(
                        f"{self.kind} exited with {self.process.returncode}: {self.log_tail()}"
                    )
                try:
                    with engine.connect() as connection:
                        connection.execute(text("SELECT 1"))
                    break
                except OperationalError:
                    if time.monotonic() > deadline:
                        raise PrivateDatabaseError(
                            f"{self.kind} did not answer in {timeout:.0f} s: {self.log_tail()}"
                        ) from None
                    time.sleep(0.2)
        finally:
            engine.dispose()
        if first:
            self._create_database()

    def kill(self) -> None:
        """SIGKILL: the database vanishes mid-transaction, as in a crash or an OOM kill."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
            self.process = None

    def stop(self) -> None:
        """A fast shutdown (SIGINT for PostgreSQL, SIGTERM for MariaDB) and wait."""
        if self.process is not None:
            self.process.send_signal(self._stop_signal)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None

    _stop_signal = signal.SIGTERM

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "server.log").read_text(errors="replace")[-2000:]
        return "(no log)"


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise PrivateDatabaseError(f"PostgreSQL's {name} not found under /usr/lib/postgresql")
    return found[-1]


class PrivatePostgres(PrivateDatabase):
    """PostgreSQL runs as the `postgres` system user: it refuses to run as root."""

    kind = "postgresql"
    _stop_signal = signal.SIGINT  # "fast" shutdown: rolls back open transactions

    def __init__(self) -> None:
        super().__init__()
        os.chmod(self.base, 0o755)  # noqa: S103 - the postgres user must reach its data directory
        shutil.chown(self.base, "postgres")

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/artifactd"

    @property
    def admin_uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _as_postgres(argv: list[str]) -> list[str]:
        """`argv` run as `postgres`. setpriv changes user and then execs, so our child is
        PostgreSQL's postmaster itself (a SIGKILL kills it, as runuser in between would not).
        Popen's own `user=`/`group=` did the same, but made it fork instead of vfork, and a
        fork while gRPC threads run in this process can crash the child in gRPC's fork handler
        before it execs (postgres 'exited with -11' in CI, restarting the database mid-test)."""
        if os.geteuid() != 0:
            return argv
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]

    def _prepare(self) -> None:
        _run(
            self._as_postgres(
                [_postgres_bin("initdb"), "-D", str(self.base / "data"),
                 "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]
            ),
            "initdb",
        )  # fmt: skip

    def _command(self) -> list[str]:
        return self._as_postgres(
            [_postgres_bin("postgres"), "-D", str(self.base / "data"),
             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.base}", "-c", "fsync=off"]
        )  # fmt: skip


class PrivateMariaDB(PrivateDatabase):
    kind = "mariadb"

    @property
    def uri(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/artifactd"

    @property
    def admin_uri(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/"

    def _prepare(self) -> None:
        _run(
            [shutil.which("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
             f"--datadir={self.base / 'data'}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            "mariadb-install-db",
        )  # fmt: skip

    def _command(self) -> list[str]:
        return [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--no-defaults",
            f"--datadir={self.base / 'data'}", "--user=root", f"--port={self.port}",
            "--bind-address=127.0.0.1", f"--socket={self.base / 'mariadb.sock'}",
            f"--pid-file={self.base / 'mariadb.pid'}", "--skip-log-bin",
            "--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=2",
        ]  # fmt: skip
