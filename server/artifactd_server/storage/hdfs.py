"""HDFS: the artifact root is `hdfs://namenode[:port]/path` (or `viewfs://cluster/path`).

The filesystem is `pyarrow.fs.HadoopFileSystem` (libhdfs over JNI), configured as MLflow does:
`MLFLOW_KERBEROS_TICKET_CACHE` → `kerb_ticket`, `MLFLOW_KERBEROS_USER` → `user` (else the URI's
user, else the login user), `MLFLOW_PYARROW_EXTRA_CONF` (`key=value,key=value`) → `extra_conf`,
and a URI without a host → `"default"` (fs.defaultFS from core-site.xml) on port 0.
`MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` becomes Hadoop's client timeouts
(`dfs.client.socket-timeout`, `ipc.client.connect.timeout`) unless the extra conf sets them.

The recipe is remote_fs.py's, over any `pyarrow.fs.FileSystem` (`ArrowStorage`): that is how it
is tested on these machines, where no HDFS can run, on pyarrow's local filesystem. pyarrow
specifics: `move` replaces an existing file by deleting it first (HDFS's rename refuses to
replace), so an overwrite leaves a moment with no file at the path; fail-if-exists checks, then
renames (two uploads racing to create the same new file can both succeed, the last one wins).
`delete_dir` is always recursive, so a directory an aborted upload made is left in place rather
than removed with whatever a concurrent upload has just put in it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import unquote, urlsplit

from artifactd.protocol.errors import (
    AlreadyExists,
    ArtifactError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from artifactd_server import settings
from artifactd_server.extras import raise_missing_extra
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

if TYPE_CHECKING:
    import pyarrow
    import pyarrow.fs as pafs

SCHEMES = ("hdfs", "viewfs")
TIMEOUT_KEYS = ("dfs.client.socket-timeout", "ipc.client.connect.timeout")
SETUP_HINT = (
    "HDFS needs a Java runtime (JAVA_HOME), Hadoop's libhdfs (ARROW_LIBHDFS_DIR or "
    "HADOOP_HOME/lib/native) and Hadoop's jars on the CLASSPATH (`hadoop classpath --glob`)"
)


class ArrowStorage(RemoteStorage["pafs.FileSystem"]):
    """An artifact root at the absolute path `root` of a pyarrow filesystem."""

    name = "pyarrow"
    capabilities = StorageCapabilities(range_reads=True)

    def __init__(self, filesystem: pafs.FileSystem, root: str, uri: str) -> None:
        if not root.startswith("/"):
            raise InvalidArgument(f"the artifact root {root!r} must be an absolute path")
        self._uri = uri.rstrip("/")
        super().__init__(_ArrowFS(filesystem, self._uri), root)

    @property
    def uri(self) -> str:
        return self._uri


class HDFSStorage(ArrowStorage):
    name = "hdfs"

    def __init__(self, destination: str, *, environ: Mapping[str, str] | None = None) -> None:
        try:  # pyarrow is the 'hdfs' extra's: without it, one line naming the extra
            import pyarrow.fs as pafs
        except ImportError as exc:
            raise_missing_extra("an hdfs:// destination", "hdfs", exc)

        settings = hadoop_settings(destination, os.environ if environ is None else environ)
        try:
            filesystem = pafs.HadoopFileSystem(**settings.arguments)
        except OSError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise FailedPrecondition(
                f"cannot open HDFS for {settings.uri}: {first_line}. {SETUP_HINT}"
            ) from None
        super().__init__(filesystem, settings.root, settings.uri)


class HadoopArguments(TypedDict):
    host: str
    port: int
    user: str | None
    kerb_ticket: str | None
    extra_conf: dict[str, str]


@dataclass(frozen=True)
class HadoopSettings:
    """What `HadoopFileSystem` is given for one destination, and the root path on it."""

    arguments: HadoopArguments
    root: str
    uri: str


def hadoop_settings(destination: str, env: Mapping[str, str]) -> HadoopSettings:
    """Reads an hdfs:// or viewfs:// destination and MLflow's HDFS variables; refuses bad ones."""
    parts = urlsplit(destination)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidArgument(f"{destination!r} is not an hdfs:// or viewfs:// URI")
    if parts.password:
        raise InvalidArgument(
            "an hdfs:// destination carries no password: HDFS authenticates with Kerberos "
            "(MLFLOW_KERBEROS_TICKET_CACHE, MLFLOW_KERBEROS_USER)"
        )
    if parts.query or parts.fragment:
        raise InvalidArgument(f"an {scheme}:// destination takes no ?query or #fragment")
    try:
        port = parts.port or 0
    except ValueError:
        raise InvalidArgument(f"the port in {destination!r} is not a number") from None
    root = posixpath.normpath(unquote(parts.path) or "/")
    if not root.startswith("/"):
        root = f"/{root}"
    host = f"{scheme}://{parts.hostname}" if parts.hostname else "default"
    user = settings.HDFS_USER.get(env) or (unquote(parts.username) if parts.username else None)
    extra_conf = parse_extra_conf(settings.HDFS_EXTRA_CONF.get(env) or "")
    timeout_ms = str(int(transfer_timeout(env) * 1000))
    for key in TIMEOUT_KEYS:
        extra_conf.setdefault(key, timeout_ms)
    arguments: HadoopArguments = {
        "host": host,
        "port": port,
        "user": user,
        "kerb_ticket": settings.HDFS_TICKET_CACHE.get(env) or None,
        "extra_conf": extra_conf,
    }
    location = parts.hostname or ""
    if parts.port:
        location = f"{location}:{parts.port}"
    return HadoopSettings(arguments, root, f"{scheme}://{location}{'' if root == '/' else root}")


def parse_extra_conf(raw: str) -> dict[str, str]:
    """MLFLOW_PYARROW_EXTRA_CONF: `key=value,key=value` (MLflow's format); checked at start-up."""
    conf: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(
                f"MLFLOW_PYARROW_EXTRA_CONF item {item.strip()!r} is not key=value; "
                "the format is key=value,key=value (e.g. dfs.replication=2)"
            )
        conf[key.strip()] = value.strip()
    return conf


class _ArrowFS(RemoteFS["pafs.FileSystem"]):
    """The remote_fs primitives on one pyarrow filesystem, shared by every request.

    pyarrow filesystems are thread-safe and hold their own connections, so a "connection" here
    is the filesystem itself; the pool still bounds how many requests use it at once.
    """

    removes_empty_dirs = False  # pyarrow's delete_dir is recursive: see the module docstring

    def __init__(self, filesystem: pafs.FileSystem, where: str) -> None:
        self._fs = filesystem
        self._where = where

    def connect(self) -> pafs.FileSystem:
        return self._fs

    def disconnect(self, conn: pafs.FileSystem) -> None:
        pass

    def alive(self, conn: pafs.FileSystem) -> bool:
        return True

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        import pyarrow

        try:
            yield
        except ArtifactError:
            raise
        except FileNotFoundError:
            raise NotFound(f"{what} does not exist") from None
        except PermissionError as exc:
            raise PermissionDenied(f"{self._where} refused access to {what}: {exc}") from None
        except FileExistsError:
            raise AlreadyExists(f"{what} already exists") from None
        except (NotADirectoryError, IsADirectoryError) as exc:
            raise FailedPrecondition(f"{what}: {_first_line(exc)}") from None
        except (OSError, pyarrow.ArrowException) as exc:
            raise Unavailable(
                f"{self._where} failed on {what}: {_first_line(exc)}; retry later"
            ) from None

    def stat(self, conn: pafs.FileSystem, remote: str) -> RemoteStat | None:
        import pyarrow.fs as pafs

        try:
            info = conn.get_file_info(remote)
        except NotADirectoryError:
            return None  # a parent is a file
        if info.type == pafs.FileType.NotFound:
            return None
        return _stat(info)

    def listdir(self, conn: pafs.FileSystem, remote: str) -> list[tuple[str, RemoteStat]]:
        import pyarrow.fs as pafs

        infos = conn.get_file_info(pafs.FileSelector(remote, recursive=False))
        return [
            (info.base_name, _stat(info))
            for info in infos
            if info.type in (pafs.FileType.File, pafs.FileType.Directory)
        ]

    def mkdir(self, conn: pafs.FileSystem, remote: str) -> None:
        conn.create_dir(remote, recursive=False)

    def rmdir(self, conn: pafs.FileSystem, remote: str) -> None:
        # pyarrow has no "remove if empty": check first (used only after emptying the directory).
        if self.listdir(conn, remote):
            raise FailedPrecondition(f"'{remote}' is not empty")
        conn.delete_dir(remote)

    def remove(self, conn: pafs.FileSystem, remote: str) -> None:
        conn.delete_file(remote)

    def rename(self, conn: pafs.FileSystem, source: str, target: str, *, overwrite: bool) -> None:
        if not overwrite:  # pyarrow's move replaces (on HDFS by deleting the target first)
            refuse_existing(self, conn, target)
        conn.move(source, target)

    def open_write(self, conn: pafs.FileSystem, remote: str) -> RemoteWriter:
        return _Writer(conn.open_output_stream(remote))

    def open_append(self, conn: pafs.FileSystem, remote: str) -> RemoteWriter:
        return _Writer(conn.open_append_stream(remote))

    def open_read(self, conn: pafs.FileSystem, remote: str) -> RemoteFileHandle:
        st = self.stat(conn, remote)
        if st is None:
            raise NotFound(f"'{remote}' does not exist")
        if st.is_dir:
            raise FailedPrecondition(f"'{remote}' is a directory")
        return _Handle(conn.open_input_file(remote), st)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stat(info: pafs.FileInfo) -> RemoteStat:
    import pyarrow.fs as pafs

    is_dir = info.type == pafs.FileType.Directory
    mtime_ns = info.mtime_ns or 0
    return RemoteStat(is_dir, 0 if is_dir else int(info.size or 0), mtime_ns // 1_000_000_000)


class _Writer(RemoteWriter):
    def __init__(self, stream: pyarrow.NativeFile) -> None:
        self._stream: pyarrow.NativeFile | None = stream

    def write(self, data: bytes | memoryview) -> None:
        if self._stream is None:
            raise RuntimeError("writer closed")
        self._stream.write(data)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()  # HDFS: the file is complete (and its blocks acknowledged) only now

    def abort(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


class _Handle(RemoteFileHandle):
    def __init__(self, stream: pyarrow.NativeFile, st: RemoteStat) -> None:
        self._stream, self._st = stream, st

    def stat(self) -> RemoteStat:
        return self._st

    def read(self, offset: int, length: int, chunk_size: int) -> Iterator[bytes]:
        remaining = length
        self._stream.seek(offset)
        while remaining > 0:
            data = self._stream.read(min(chunk_size, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data

    def close(self) -> None:
        self._stream.close()
