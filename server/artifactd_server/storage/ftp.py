"""FTP: the artifact root is `ftp://user:password@host[:port]/path` (ftplib, passive mode).
`MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` (default 60 s) bounds every wait on the server.

The recipe is remote_fs.py's. FTP specifics: the server must speak RFC 3659 (`MLST`/`MLSD`, as
pyftpdlib, ProFTPD and Pure-FTPd do; vsftpd does not). `RNTO` replaces an existing file on most
servers, so fail-if-exists checks the target and then renames: two uploads racing to create the
same new file can both succeed (the last one wins); overwrites are atomic as far as the server's
rename is. A download cannot pin a version: an overwrite during a download can mix two versions
(the size and digest checks of the client catch it). The password is used to log in only: it is
never logged, never part of an error message and not part of `uri`.
"""

from __future__ import annotations

import contextlib
import ftplib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from artifactd.protocol.errors import (
    ArtifactError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from artifactd_server.storage.base import StorageCapabilities
from artifactd_server.storage.common import transfer_timeout
from artifactd_server.storage.remote_fs import (
    RemoteFileHandle,
    RemoteFS,
    RemoteStat,
    RemoteStorage,
    RemoteWriter,
    refuse_existing,
)


class FTPStorage(RemoteStorage[ftplib.FTP]):
    name = "ftp"
    capabilities = StorageCapabilities(range_reads=True)

    def __init__(self, destination: str) -> None:
        parts = urlsplit(destination)
        if not parts.hostname:
            raise InvalidArgument("an ftp:// destination needs a host: ftp://user:pass@host/path")
        self._fs_impl = _FTP(
            parts.hostname,
            parts.port or 21,
            unquote(parts.username or "anonymous"),
            unquote(parts.password or ""),
            transfer_timeout(os.environ),
        )
        self._path = unquote(parts.path) or "/"
        super().__init__(self._fs_impl, self._path)

    @property
    def uri(self) -> str:
        f = self._fs_impl
        return f"ftp://{f.user}@{f.host}:{f.port}{self._root}"


class _FTP(RemoteFS[ftplib.FTP]):
    def __init__(self, host: str, port: int, user: str, password: str, timeout: float) -> None:
        self.host, self.port, self.user = host, port, user
        self._password = password
        self._timeout = timeout

    def connect(self) -> ftplib.FTP:
        conn = ftplib.FTP(timeout=self._timeout, encoding="utf-8")  # noqa: S321 - FTP is asked for
        with self.errors(f"connecting to {self.host}:{self.port}"):
            try:
                conn.connect(self.host, self.port)
                conn.login(self.user, self._password)
                conn.set_pasv(True)
                conn.voidcmd("TYPE I")
            except BaseException:
                self.disconnect(conn)
                raise
        return conn

    def disconnect(self, conn: ftplib.FTP) -> None:
        try:
            conn.quit()
        except Exception:  # a dead or never-opened connection: just close it
            conn.close()

    def alive(self, conn: ftplib.FTP) -> bool:
        try:
            conn.voidcmd("NOOP")
        except (OSError, EOFError, ftplib.Error):
            return False
        return True

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except ArtifactError:
            raise
        except ftplib.error_perm as exc:
            raise _perm_error(str(exc), what) from None
        except (ftplib.error_temp, ftplib.error_reply, ftplib.error_proto) as exc:
            raise Unavailable(
                f"FTP server {self.host}:{self.port} failed on {what}: {exc}"
            ) from None
        except (OSError, EOFError) as exc:
            raise Unavailable(
                f"FTP server {self.host}:{self.port} unreachable ({what}): "
                f"{str(exc) or type(exc).__name__}"
            ) from None

    def stat(self, conn: ftplib.FTP, remote: str) -> RemoteStat | None:
        try:
            reply = conn.sendcmd(f"MLST {remote}")
        except ftplib.error_perm as exc:
            if str(exc).startswith("550"):
                return None
            raise
        lines = [line for line in reply.splitlines() if line.startswith(" ")]
        if not lines:
            raise Unavailable(f"unexpected MLST reply from the FTP server: {reply[:200]!r}")
        facts_text = lines[0].strip().partition(" ")[0]
        facts = dict(
            f.split("=", 1) for f in facts_text.split(";") if "=" in f
        )  # keys case-insensitive per RFC 3659
        return _stat({k.lower(): v for k, v in facts.items()})

    def listdir(self, conn: ftplib.FTP, remote: str) -> list[tuple[str, RemoteStat]]:
        try:
            listed = list(conn.mlsd(remote))
        except ftplib.error_perm as exc:
            if str(exc).startswith("550"):
                raise NotFound(f"'{remote}' does not exist") from None
            raise
        return [
            (name, _stat(facts))
            for name, facts in listed
            if facts.get("type", "").lower() in ("file", "dir") and name not in (".", "..")
        ]

    def mkdir(self, conn: ftplib.FTP, remote: str) -> None:
        conn.mkd(remote)

    def rmdir(self, conn: ftplib.FTP, remote: str) -> None:
        conn.rmd(remote)

    def remove(self, conn: ftplib.FTP, remote: str) -> None:
        conn.delete(remote)

    def rename(self, conn: ftplib.FTP, source: str, target: str, *, overwrite: bool) -> None:
        if not overwrite:  # RNTO replaces on most servers; FTP has no exclusive rename
            refuse_existing(self, conn, target)
        conn.rename(source, target)

    def open_write(self, conn: ftplib.FTP, remote: str) -> RemoteWriter:
        conn.voidcmd("TYPE I")  # every transfer: ftplib's listings switch to ASCII
        return _Writer(conn, conn.transfercmd(f"STOR {remote}"))

    def open_append(self, conn: ftplib.FTP, remote: str) -> RemoteWriter:
        conn.voidcmd("TYPE I")
        return _Writer(conn, conn.transfercmd(f"APPE {remote}"))

    def open_read(self, conn: ftplib.FTP, remote: str) -> RemoteFileHandle:
        st = self.stat(conn, remote)
        if st is None:
            raise NotFound(f"'{remote}' does not exist")
        return _Handle(conn, remote, st)


def _stat(facts: dict[str, str]) -> RemoteStat:
    modify = facts.get("modify", "")
    try:
        when = datetime.strptime(modify[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        mtime = int(when.timestamp())
    except ValueError:
        mtime = 0
    is_dir = facts.get("type", "").lower() in ("dir", "cdir", "pdir")
    return RemoteStat(is_dir, 0 if is_dir else int(facts.get("size", "0") or 0), mtime)


def _perm_error(message: str, what: str) -> ArtifactError:
    code, lowered = message[:3], message.lower()
    if code == "530" or any(w in lowered for w in ("permission", "privilege", "denied")):
        return PermissionDenied(f"the FTP server refused access to {what}: {message}")
    if code == "552":
        return ResourceExhausted(f"the FTP server has no space for {what}: {message}")
    if code == "550":
        return NotFound(f"{what} does not exist on the FTP server: {message}")
    return Unavailable(f"the FTP server failed on {what}: {message}")


class _Writer(RemoteWriter):
    def __init__(self, conn: ftplib.FTP, sock: socket.socket) -> None:
        self._conn = conn
        self._sock: socket.socket | None = sock

    def write(self, data: bytes | memoryview) -> None:
        if self._sock is None:
            raise RuntimeError("writer closed")
        self._sock.sendall(data)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            self._conn.voidresp()

    def abort(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            with contextlib.suppress(OSError, EOFError, ftplib.Error):
                self._conn.getresp()  # 226 or 426: the partial file is removed by the caller


class _Handle(RemoteFileHandle):
    def __init__(self, conn: ftplib.FTP, remote: str, st: RemoteStat) -> None:
        self._conn, self._remote, self._st = conn, remote, st

    def stat(self) -> RemoteStat:
        return self._st

    def read(self, offset: int, length: int, chunk_size: int) -> Iterator[bytes]:
        remaining = length
        self._conn.voidcmd("TYPE I")
        sock = self._conn.transfercmd(f"RETR {self._remote}", rest=offset or None)
        with sock:
            while remaining > 0:
                data = sock.recv(min(chunk_size, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data
            if remaining == 0 and offset + length < self._st.size:
                # Stopped before the end: the server's reply to the cut transfer is unpredictable,
                # so this connection is dropped rather than reused.
                self.reusable = False
                return
        self._conn.voidresp()

    def close(self) -> None:
        pass
