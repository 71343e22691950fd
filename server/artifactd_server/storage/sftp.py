"""SFTP: the artifact root is `sftp://user@host[:port]/path` (paramiko).

The recipe is remote_fs.py's. Authentication is by key: `ARTIFACTD_SFTP_IDENTITY_FILE`, else the
`IdentityFile` of `~/.ssh/config` (or `ARTIFACTD_SFTP_SSH_CONFIG`) for the host, else the SSH
agent and the default keys in `~/.ssh`. `~/.ssh/config` also supplies `HostName`, `User` and
`Port`. A password in the URI is accepted, with a warning (it ends up in command lines and
configuration files). Host keys are checked against `~/.ssh/known_hosts` (or
`ARTIFACTD_SFTP_KNOWN_HOSTS`, or the config's `UserKnownHostsFile`) and the system's known hosts;
an unknown host is refused unless `ARTIFACTD_SFTP_ACCEPT_NEW_HOST_KEYS=1`, which accepts (and
remembers for the process) a host's first key. A changed key is always refused.
`MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` (default 60 s) bounds connecting and every request.

Fail-if-exists is the protocol's plain rename, which refuses an existing target on OpenSSH and
most servers (of two racing uploads exactly one wins); overwrite is `posix-rename@openssh.com`.
A download reads through an open handle, so a concurrent overwrite never mixes versions.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat as stat_mode
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import paramiko

from artifactd.protocol.errors import (
    AlreadyExists,
    ArtifactError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from artifactd_server import settings
from artifactd_server.storage.base import StorageCapabilities
from artifactd_server.storage.common import transfer_timeout
from artifactd_server.storage.remote_fs import (
    RemoteFileHandle,
    RemoteFS,
    RemoteStat,
    RemoteStorage,
    RemoteWriter,
)

log = logging.getLogger(__name__)

ACCEPT_NEW_ENV = settings.SFTP_ACCEPT_NEW_HOST_KEYS.name

Conn = tuple[paramiko.SSHClient, paramiko.SFTPClient]


class SFTPStorage(RemoteStorage[Conn]):
    name = "sftp"
    capabilities = StorageCapabilities(range_reads=True)

    def __init__(self, destination: str) -> None:
        parts = urlsplit(destination)
        if not parts.hostname:
            raise InvalidArgument("an sftp:// destination needs a host: sftp://user@host/path")
        if parts.password:
            log.warning(
                "the sftp:// destination carries a password; prefer key authentication "
                "(ARTIFACTD_SFTP_IDENTITY_FILE, ~/.ssh/config or an SSH agent)"
            )
        self._fs_impl = _SFTP(
            parts.hostname,
            parts.port,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )
        self._path = unquote(parts.path) or "."
        super().__init__(self._fs_impl, self._path)

    @property
    def uri(self) -> str:
        f = self._fs_impl
        root = self._root if self._root.startswith("/") else f"/{self._root}"
        return f"sftp://{f.user}@{f.alias}:{f.port}{root}"


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Accepts a host's first key (like OpenSSH's StrictHostKeyChecking=accept-new)."""

    def __init__(self, known: paramiko.HostKeys) -> None:
        self._known = known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        log.warning(
            "accepting the new %s host key of %s (%s is set): %s",
            key.get_name(), hostname, ACCEPT_NEW_ENV, key.fingerprint,
        )  # fmt: skip
        self._known.add(hostname, key.get_name(), key)


class _SFTP(RemoteFS[Conn]):
    def __init__(
        self, alias: str, port: int | None, user: str | None, password: str | None
    ) -> None:
        config_path = settings.SFTP_SSH_CONFIG.get() or os.path.expanduser("~/.ssh/config")
        config = paramiko.SSHConfig()
        if os.path.exists(config_path):
            config = paramiko.SSHConfig.from_path(config_path)
        host = config.lookup(alias)
        self.alias = alias
        self.hostname = host.get("hostname", alias)
        self.port = port or int(host.get("port", 22))
        self.user = user or host.get("user") or _local_user()
        self._password = password
        identity = settings.SFTP_IDENTITY_FILE.get()
        self._identities = [identity] if identity else host.get("identityfile")
        self._known = paramiko.HostKeys()
        known_files = [
            settings.SFTP_KNOWN_HOSTS.get() or "",
            *(host.get("userknownhostsfile", "").split()),
            os.path.expanduser("~/.ssh/known_hosts"),
            "/etc/ssh/ssh_known_hosts",
        ]
        for path in known_files:
            if path and os.path.exists(os.path.expanduser(path)):
                with contextlib.suppress(OSError):
                    self._known.load(os.path.expanduser(path))
        self._accept_new = settings.SFTP_ACCEPT_NEW_HOST_KEYS.get() == "1"
        self._timeout = transfer_timeout(os.environ)

    def connect(self) -> Conn:
        client = paramiko.SSHClient()
        for hostname, keys in self._known.items():
            for key_type, key in keys.items():
                client.get_host_keys().add(hostname, key_type, key)
        client.set_missing_host_key_policy(
            _AcceptNew(self._known) if self._accept_new else paramiko.RejectPolicy()
        )
        where = f"{self.user}@{self.hostname}:{self.port}"
        try:
            with self.errors(f"connecting to {where}"):
                client.connect(
                    self.hostname, port=self.port, username=self.user, password=self._password,
                    key_filename=cast(Any, self._identities), look_for_keys=not self._identities,
                    allow_agent=True, timeout=self._timeout, banner_timeout=self._timeout,
                    auth_timeout=self._timeout, channel_timeout=self._timeout,
                )  # fmt: skip
                sftp = client.open_sftp()
                channel = sftp.get_channel()
                if channel is not None:  # every request's wait, not just the login's
                    channel.settimeout(self._timeout)
                return client, sftp
        except BaseException:
            client.close()
            raise

    def disconnect(self, conn: Conn) -> None:
        with contextlib.suppress(Exception):
            conn[1].close()
        with contextlib.suppress(Exception):
            conn[0].close()

    def alive(self, conn: Conn) -> bool:
        transport = conn[0].get_transport()
        return transport is not None and transport.is_active()

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        where = f"{self.hostname}:{self.port}"
        try:
            yield
        except ArtifactError:
            raise
        except paramiko.BadHostKeyException:
            raise PermissionDenied(
                f"the SSH host key of {where} does not match known_hosts; refusing to connect"
            ) from None
        except paramiko.AuthenticationException as exc:
            raise PermissionDenied(f"SSH authentication to {where} failed: {exc}") from None
        except paramiko.SSHException as exc:
            if "known_hosts" in str(exc):
                raise PermissionDenied(
                    f"{where} is not in known_hosts (set {ACCEPT_NEW_ENV}=1 to accept new keys)"
                ) from None
            raise Unavailable(f"SSH error with {where} on {what}: {exc}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise NotFound(f"{what} does not exist") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise PermissionDenied(f"the SFTP server refused access to {what}") from None
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted(f"the SFTP server has no space for {what}") from None
            if isinstance(exc, (socket.error, EOFError, ConnectionError)) and exc.errno is not None:
                raise Unavailable(f"SFTP server {where} unreachable ({what}): {exc}") from None
            if isinstance(exc, TimeoutError):  # paramiko's socket.timeout says nothing itself
                raise Unavailable(f"SFTP server {where} did not answer in time ({what})") from None
            raise Unavailable(
                f"SFTP error with {where} on {what}: {str(exc) or type(exc).__name__}"
            ) from None
        except EOFError as exc:
            raise Unavailable(f"SFTP server {where} closed the connection ({what})") from exc

    def stat(self, conn: Conn, remote: str) -> RemoteStat | None:
        try:
            return _stat(conn[1].stat(remote))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def listdir(self, conn: Conn, remote: str) -> list[tuple[str, RemoteStat]]:
        return [
            (a.filename, _stat(a))
            for a in conn[1].listdir_attr(remote)
            if not stat_mode.S_ISLNK(a.st_mode or 0)
        ]

    def mkdir(self, conn: Conn, remote: str) -> None:
        conn[1].mkdir(remote)

    def rmdir(self, conn: Conn, remote: str) -> None:
        conn[1].rmdir(remote)

    def remove(self, conn: Conn, remote: str) -> None:
        conn[1].remove(remote)

    def rename(self, conn: Conn, source: str, target: str, *, overwrite: bool) -> None:
        if overwrite:
            conn[1].posix_rename(source, target)
            return
        try:
            conn[1].rename(source, target)  # SSH_FXP_RENAME refuses an existing target
        except OSError:
            if self.stat(conn, target) is not None:
                raise AlreadyExists(target) from None
            raise

    def open_write(self, conn: Conn, remote: str) -> RemoteWriter:
        handle = conn[1].open(remote, "wbx")
        handle.set_pipelined(True)
        return _Writer(handle)

    def open_append(self, conn: Conn, remote: str) -> RemoteWriter:
        handle = conn[1].open(remote, "ab")
        handle.set_pipelined(True)
        return _Writer(handle)

    def open_read(self, conn: Conn, remote: str) -> RemoteFileHandle:
        handle = conn[1].open(remote, "rb")
        try:
            st = _stat(handle.stat())
        except BaseException:
            handle.close()
            raise
        if st.is_dir:
            handle.close()
            raise IsADirectoryError(errno.EISDIR, remote)
        return _Handle(handle, st)


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def _stat(attrs: paramiko.SFTPAttributes) -> RemoteStat:
    is_dir = stat_mode.S_ISDIR(attrs.st_mode or 0)
    return RemoteStat(is_dir, 0 if is_dir else int(attrs.st_size or 0), int(attrs.st_mtime or 0))


class _Writer(RemoteWriter):
    def __init__(self, handle: paramiko.SFTPFile) -> None:
        self._handle = handle

    def write(self, data: bytes | memoryview) -> None:
        self._handle.write(data)

    def close(self) -> None:
        self._handle.close()  # waits for the pipelined writes and raises their errors

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._handle.close()


class _Handle(RemoteFileHandle):
    def __init__(self, handle: paramiko.SFTPFile, st: RemoteStat) -> None:
        self._handle, self._st = handle, st

    def stat(self) -> RemoteStat:
        return self._st

    def read(self, offset: int, length: int, chunk_size: int) -> Iterator[bytes]:
        self._handle.seek(offset)
        remaining = length
        while remaining > 0:
            data = self._handle.read(min(chunk_size, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data

    def close(self) -> None:
        self._handle.close()
