"""The FTP/SFTP connection pool after the storage server restarted under it.

Every pooled connection died with the server; a request that finds one broken closes it, and
the idle ones must then be checked (a NOOP) before their next use. Otherwise each of them fails
one more request after the server is back: a client that does not retry sees an outage last
as many requests as the pool held connections. On pyftpdlib, killed and restarted on its port
with its files on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from artifactd.protocol.errors import Unavailable
from artifactd.protocol.paths import parse
from artifactd_server.storage import open_storage

from backend_servers import (
    FTP_PASSWORD,
    FTP_USER,
    HOST,
    SERVERS_PYTHON,
    _free_port,
    _start_tcp_server,
)

POOLED = 4


def test_a_restarted_server_costs_one_failed_request_not_one_per_connection(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    (home / "root").mkdir(parents=True)
    (home / "root" / "model.bin").write_bytes(os.urandom(1000))
    port = _free_port()
    command = [SERVERS_PYTHON, "-m", "pyftpdlib", "-i", HOST, "-p", str(port), "-w",
               "-d", str(home), "-u", FTP_USER, "-P", FTP_PASSWORD]  # fmt: skip
    process = _start_tcp_server(command, port, tmp_path / "ftpd.log", "pyftpdlib")
    storage = open_storage(f"ftp://{FTP_USER}:{FTP_PASSWORD}@{HOST}:{port}/root")
    path = parse("model.bin")
    try:
        readers = [storage.open_file(path) for _ in range(POOLED)]  # one connection each
        for reader in readers:
            reader.close()  # back to the pool, idle
        process.kill()
        process.wait(10)
        process = _start_tcp_server(command, port, tmp_path / "ftpd.log", "pyftpdlib")
        failures = []
        for _ in range(POOLED):
            try:
                assert storage.stat(path).size == 1000
            except Unavailable as exc:
                failures.append(exc.message)
        assert len(failures) <= 1, failures
        assert not [m for m in failures if m.endswith(": ")], "the failure says nothing"
    finally:
        storage.close()
        process.kill()
        process.wait(10)
