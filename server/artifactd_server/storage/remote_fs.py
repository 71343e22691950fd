"""What the remote-filesystem backends (FTP, SFTP) share: local.py's recipe over a network protocol.

A protocol module implements a handful of primitives on one connection (`RemoteFS`); this module
turns them into the storage adapter: uploads stream into a hidden temporary file
(`.artifactd-upload-<uuid>`) in the destination directory and are renamed into place at commit;
parents are made as needed (mkdir -p) and removed again when an aborted upload made them;
directories are listed one level at a time and deleted recursively.

These protocols keep no extended attributes, so the sha256 is stored in a hidden sidecar file
`.artifactd-sha256-<name>` next to the file, holding the digest with the size and modification
time (seconds) it describes: a file changed behind the server's back no longer matches and is
reported with an unknown digest rather than a wrong one. Listings do not read sidecars (one more
round trip per file); `stat` and downloads do.

Connections are reused through a small bounded pool; an upload or a download holds one connection
for its whole duration.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from artifactd.protocol.errors import (
    AlreadyExists,
    ArtifactError,
    DataLoss,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from artifactd.protocol.paths import RESERVED_PREFIX, ArtifactPath
from artifactd_server.storage.base import Entry, FileReader, ResumableWrites, Storage, Upload
from artifactd_server.storage.common import already_exists, check_token, child_path, is_reserved

log = logging.getLogger(__name__)

TEMP_PREFIX = f"{RESERVED_PREFIX}upload-"
DIGEST_PREFIX = f"{RESERVED_PREFIX}sha256-"
_POOL_WAIT = 60.0  # seconds a request waits for a free connection
RECORDED_FROM = 8 * 1024 * 1024
"""Bytes past which an upload's temporary file is recorded for the sweeper (as S3 records a
multipart upload once it passes one 8 MiB part): smaller ones cost no backend-store writes."""
_IDLE_CHECK = 10.0  # an idle connection older than this is checked before it is reused

C = TypeVar("C")


@dataclass(frozen=True)
class RemoteStat:
    is_dir: bool
    size: int
    mtime: int  # seconds: the precision FTP's MLST and SFTP v3 give


class RemoteWriter(ABC):
    """A remote file open for writing, fed chunk by chunk."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Finishes the file; raises if the server did not store all of it."""

    @abstractmethod
    def abort(self) -> None:
        """Stops writing (the partial file is removed by the caller); never raises."""


class RemoteFileHandle(ABC):
    """A remote file open for reading: `stat` describes what `read` yields."""

    reusable = True
    """False once the connection it reads on cannot serve another request."""

    @abstractmethod
    def stat(self) -> RemoteStat: ...

    @abstractmethod
    def read(self, offset: int, length: int, chunk_size: int) -> Iterator[bytes]:
        """Yields up to `length` bytes from `offset`; stopping early may break the connection."""

    @abstractmethod
    def close(self) -> None: ...


class RemoteFS(ABC, Generic[C]):
    """The primitives of one protocol. Errors leave as `protocol.errors` (see `errors`)."""

    removes_empty_dirs = True
    """Whether `rmdir` refuses a non-empty directory by itself, atomically. Without that, the
    directories an aborted upload made are left in place: removing them could take a file a
    concurrent upload has just committed there."""

    @abstractmethod
    def connect(self) -> C: ...

    @abstractmethod
    def disconnect(self, conn: C) -> None:
        """Closes a connection; never raises."""

    @abstractmethod
    def alive(self, conn: C) -> bool: ...

    @abstractmethod
    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Translates the protocol's exceptions raised inside into `artifactd.protocol.errors`."""

    @abstractmethod
    def stat(self, conn: C, remote: str) -> RemoteStat | None:
        """None if nothing is at `remote` (or a parent is a file)."""

    @abstractmethod
    def listdir(self, conn: C, remote: str) -> list[tuple[str, RemoteStat]]:
        """All entries of a directory, hidden ones included; symbolic links are left out."""

    @abstractmethod
    def mkdir(self, conn: C, remote: str) -> None: ...

    @abstractmethod
    def rmdir(self, conn: C, remote: str) -> None:
        """Removes an empty directory; raises if it is not empty."""

    @abstractmethod
    def remove(self, conn: C, remote: str) -> None: ...

    @abstractmethod
    def rename(self, conn: C, source: str, target: str, *, overwrite: bool) -> None:
        """Renames; with `overwrite=False` raises `AlreadyExists` if `target` exists."""

    @abstractmethod
    def open_write(self, conn: C, remote: str) -> RemoteWriter: ...

    @abstractmethod
    def open_read(self, conn: C, remote: str) -> RemoteFileHandle: ...

    @abstractmethod
    def open_append(self, conn: C, remote: str) -> RemoteWriter:
        """Opens an existing file to write at its end (resumable uploads)."""

    def write_small(self, conn: C, remote: str, data: bytes) -> None:
        writer = self.open_write(conn, remote)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.close()

    def read_small(self, conn: C, remote: str, limit: int = 4096) -> bytes:
        handle = self.open_read(conn, remote)
        try:
            return b"".join(handle.read(0, min(limit, handle.stat().size), limit))
        finally:
            handle.close()


def refuse_existing(fs: RemoteFS[C], conn: C, target: str) -> None:
    """Fail-if-exists for protocols whose rename replaces a file (FTP, pyarrow): check first.

    Not atomic: two uploads racing to create the same new name can both pass (the last one wins).
    """
    if fs.stat(conn, target) is not None:
        raise AlreadyExists(target)


class ConnectionPool(Generic[C]):
    """At most `size` connections at once; idle ones are kept for reuse."""

    def __init__(self, fs: RemoteFS[C], size: int) -> None:
        self._fs = fs
        self._size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[tuple[C, float]] = []

    def checkout(self) -> C:
        if not self._slots.acquire(timeout=_POOL_WAIT):
            raise Unavailable(f"all {self._size} storage connections stayed busy; retry")
        try:
            while True:
                with self._lock:
                    if not self._idle:
                        break
                    conn, since = self._idle.pop()
                if time.monotonic() - since < _IDLE_CHECK or self._fs.alive(conn):
                    return conn
                self._fs.disconnect(conn)
            return self._fs.connect()
        except BaseException:
            self._slots.release()
            raise

    def checkin(self, conn: C, *, broken: bool = False) -> None:
        """Returns `conn`; a `broken` one is closed, and the idle ones are checked before their
        next use: the server may have restarted under them all, and each would otherwise fail
        one request after it is back."""
        try:
            if broken:
                self._fs.disconnect(conn)
                with self._lock:
                    self._idle = [(idle, -_IDLE_CHECK) for idle, _since in self._idle]
            else:
                with self._lock:
                    self._idle.append((conn, time.monotonic()))
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def connection(self) -> Iterator[C]:
        conn = self.checkout()
        broken = True
        try:
            yield conn
            broken = False
        except ArtifactError as exc:
            broken = isinstance(exc, Unavailable)  # the others are answers, not broken links
            raise
        finally:
            self.checkin(conn, broken=broken)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _since in idle:
            self._fs.disconnect(conn)


def _sidecar(remote: str) -> str:
    directory, name = posixpath.split(remote)
    return posixpath.join(directory, DIGEST_PREFIX + name)


def _entry(path: ArtifactPath, st: RemoteStat, sha256: str | None = None) -> Entry:
    if st.is_dir:
        return Entry(path, True, 0, st.mtime * 1_000_000_000)
    return Entry(path, False, st.size, st.mtime * 1_000_000_000, sha256)


class RemoteStorage(Storage, ResumableWrites, Generic[C]):
    """An artifact root on a remote filesystem reached through `fs`."""

    def __init__(self, fs: RemoteFS[C], root: str, *, pool_size: int = 16) -> None:
        self._fs = fs
        self._root = posixpath.normpath(root or ".")
        self._pool: ConnectionPool[C] = ConnectionPool(fs, pool_size)
        with self._pool.connection() as conn, fs.errors("the artifact root"):
            self._make_dirs(conn, self._root)

    def _remote(self, path: ArtifactPath) -> str:
        return posixpath.join(self._root, *path.parts)

    def _make_dirs(self, conn: C, remote: str) -> list[str]:
        """mkdir -p; returns the directories it made (deepest last)."""
        st = self._fs.stat(conn, remote)
        if st is not None:
            if not st.is_dir:
                raise FailedPrecondition("a parent is a file")
            return []
        parent = posixpath.dirname(remote)
        created = self._make_dirs(conn, parent) if parent not in (remote, "") else []
        try:
            with self._fs.errors(f"'{remote}'"):  # the protocol's own exception, translated
                self._fs.mkdir(conn, remote)
            created.append(remote)
        except ArtifactError:
            st = self._fs.stat(conn, remote)  # a concurrent upload may have made it
            if st is None or not st.is_dir:
                raise
        return created

    def _remove_empty_dirs(self, conn: C, created: list[str]) -> None:
        if not self._fs.removes_empty_dirs:
            return
        for directory in reversed(created):
            try:
                with self._fs.errors(f"'{directory}'"):
                    self._fs.rmdir(conn, directory)
            except ArtifactError:
                return  # not empty any more: another upload uses it

    # -- writing ---------------------------------------------------------------------------

    def start_upload(self, path: ArtifactPath, *, size: int | None = None) -> Upload:
        return self._open_temp(path, uuid.uuid4().hex, keep=False)

    def _open_temp(self, path: ArtifactPath, token: str, *, keep: bool) -> _RemoteUpload[C]:
        if path.is_root:
            raise FailedPrecondition("the artifact root is a directory, not a file")
        conn = self._pool.checkout()
        created: list[str] = []
        try:
            with self._fs.errors(f"'{path}'"):
                try:
                    created = self._make_dirs(conn, self._remote(path.parent))
                except FailedPrecondition:
                    raise FailedPrecondition(
                        f"a parent of '{path}' is a file, so '{path}' cannot be created"
                    ) from None
                target = self._remote(path)
                st = self._fs.stat(conn, target)
                if st is not None and st.is_dir:
                    raise FailedPrecondition(f"'{path}' is a directory; a file cannot replace it")
                temp = posixpath.join(posixpath.dirname(target), f"{TEMP_PREFIX}{token}")
                writer = self._fs.open_write(conn, temp)
        except BaseException as exc:
            with contextlib.suppress(ArtifactError):
                self._remove_empty_dirs(conn, created)
            self._pool.checkin(conn, broken=not isinstance(exc, ArtifactError))
            raise
        return _RemoteUpload(
            self, conn, path, writer, temp, target, [] if keep else created, keep=keep
        )

    # -- resumable uploads -----------------------------------------------------------------

    def _partial(self, path: ArtifactPath, token: str) -> str:
        return posixpath.join(self._remote(path.parent), f"{TEMP_PREFIX}{check_token(token)}")

    def start_resumable(self, path: ArtifactPath) -> str:
        token = uuid.uuid4().hex
        self._open_temp(path, token, keep=True).abort()  # an empty file, kept
        return token

    def resumable_size(self, path: ArtifactPath, token: str) -> int:
        with self._pool.connection() as conn, self._fs.errors(f"'{path}'"):
            st = self._fs.stat(conn, self._partial(path, token))
        if st is None or st.is_dir:
            raise NotFound(f"the bytes kept for the upload of '{path}' are gone")
        return st.size

    def resume_upload(self, path: ArtifactPath, token: str, offset: int) -> Upload:
        partial = self._partial(path, token)
        conn = self._pool.checkout()
        try:
            with self._fs.errors(f"'{path}'"):
                st = self._fs.stat(conn, partial)
                if st is None or st.is_dir:
                    raise NotFound(f"the bytes kept for the upload of '{path}' are gone")
                if st.size != offset:
                    raise FailedPrecondition(
                        f"the upload of '{path}' has {st.size} bytes stored; continue from "
                        f"there, not {offset}"
                    )
                writer = self._fs.open_append(conn, partial)
        except BaseException as exc:
            self._pool.checkin(conn, broken=not isinstance(exc, ArtifactError))
            raise
        return _RemoteUpload(self, conn, path, writer, partial, self._remote(path), [], keep=True)

    def read_resumable(self, path: ArtifactPath, token: str) -> Iterator[bytes]:
        size = self.resumable_size(path, token)
        with self.open_partial(path, token) as reader:
            yield from reader.chunks(0, size, 1 << 20)

    def open_partial(self, path: ArtifactPath, token: str) -> FileReader:
        partial = self._partial(path, token)
        conn = self._pool.checkout()
        try:
            with self._fs.errors(f"'{path}'"):
                handle = self._fs.open_read(conn, partial)
                st = handle.stat()
        except BaseException as exc:
            self._pool.checkin(conn, broken=not isinstance(exc, ArtifactError))
            raise
        return _RemoteReader(self, conn, handle, _entry(path, st))

    def discard_resumable(self, path: ArtifactPath, token: str) -> None:
        partial = self._partial(path, token)
        with (
            contextlib.suppress(NotFound),
            self._pool.connection() as conn,
            self._fs.errors(f"'{path}'"),
        ):
            self._fs.remove(conn, partial)

    def discard_leftover(self, path: ArtifactPath, handle: str) -> None:
        """Removes the temporary file of an upload to `path` that could not remove it itself
        (storage was unreachable when it aborted, or its server died); `_RemoteUpload`
        reported its token. Named as a resumable upload's kept bytes are."""
        self.discard_resumable(path, handle)

    # -- reading ---------------------------------------------------------------------------

    def _digest(self, conn: C, remote: str, st: RemoteStat) -> str | None:
        try:
            raw = self._fs.read_small(conn, _sidecar(remote)).decode()
            digest, size, mtime = raw.split(" ")
        except (ArtifactError, UnicodeDecodeError, ValueError):
            return None
        if size != str(st.size) or mtime != str(st.mtime):
            return None  # the file changed after artifactd wrote it
        return digest

    def open_file(self, path: ArtifactPath) -> FileReader:
        if path.is_root:
            raise FailedPrecondition("the artifact root is a directory; download it as a directory")
        remote = self._remote(path)
        conn = self._pool.checkout()
        try:
            with self._fs.errors(f"'{path}'"):
                st = self._fs.stat(conn, remote)
                if st is None:
                    raise NotFound(f"'{path}' does not exist")
                if st.is_dir:
                    raise FailedPrecondition(f"'{path}' is a directory, not a file")
                digest = self._digest(conn, remote, st)
                handle = self._fs.open_read(conn, remote)
                st = handle.stat()
        except BaseException as exc:
            self._pool.checkin(conn, broken=not isinstance(exc, ArtifactError))
            raise
        return _RemoteReader(self, conn, handle, _entry(path, st, digest))

    def stat(self, path: ArtifactPath) -> Entry:
        remote = self._remote(path)
        with self._pool.connection() as conn, self._fs.errors(f"'{path}'"):
            st = self._fs.stat(conn, remote)
            if st is None:
                raise NotFound(f"'{path}' does not exist")
            return _entry(path, st, None if st.is_dir else self._digest(conn, remote, st))

    def iter_tree(
        self, path: ArtifactPath, *, recursive: bool, after: ArtifactPath | None = None
    ) -> Iterator[Entry]:
        remote = self._remote(path)
        with self._pool.connection() as conn, self._fs.errors(f"'{path}'"):
            st = self._fs.stat(conn, remote)
        if st is None:
            raise NotFound(f"'{path}' does not exist")
        if not st.is_dir:
            raise FailedPrecondition(f"'{path}' is a file, not a directory")
        yield from self._walk(remote, path, recursive, after)

    def _list(self, remote: str, what: str) -> list[tuple[str, RemoteStat]]:
        # One connection per directory, returned before the caller's generator yields: a client
        # reading a listing slowly must not hold a connection.
        with self._pool.connection() as conn, self._fs.errors(what):
            try:
                return self._fs.listdir(conn, remote)
            except NotFound:
                return []  # removed while we walked: it has no entries any more

    def _walk(
        self, remote: str, path: ArtifactPath, recursive: bool, after: ArtifactPath | None
    ) -> Iterator[Entry]:
        listed = sorted((n, st) for n, st in self._list(remote, f"'{path}'") if not is_reserved(n))
        for name, st in listed:
            child = child_path(path, name)
            if child is None:
                continue
            full = posixpath.join(remote, name)
            descend = recursive and st.is_dir
            if after is not None and child.parts <= after.parts:
                if descend and after.is_relative_to(child):
                    yield from self._walk(full, child, recursive, after)
                continue
            yield _entry(child, st)
            if descend:
                yield from self._walk(full, child, recursive, after)

    # -- deleting --------------------------------------------------------------------------

    def delete(self, path: ArtifactPath) -> bool:
        if path.is_root:
            raise FailedPrecondition("refusing to delete the artifact root")
        remote = self._remote(path)
        with self._pool.connection() as conn, self._fs.errors(f"'{path}'"):
            st = self._fs.stat(conn, remote)
            if st is None:
                return False
            if st.is_dir:
                self._remove_tree(conn, remote)
            else:
                with contextlib.suppress(NotFound):
                    self._fs.remove(conn, remote)
                with contextlib.suppress(NotFound):
                    self._fs.remove(conn, _sidecar(remote))
            return True

    def _remove_tree(self, conn: C, remote: str) -> None:
        for attempt in range(5):  # uploads may add temporary files while we delete
            try:
                entries = self._fs.listdir(conn, remote)
            except NotFound:
                return
            for name, st in entries:
                full = posixpath.join(remote, name)
                with contextlib.suppress(NotFound):
                    if st.is_dir:
                        self._remove_tree(conn, full)
                    else:
                        self._fs.remove(conn, full)
            try:
                self._fs.rmdir(conn, remote)
                return
            except NotFound:
                return
            except ArtifactError:
                if attempt == 4:
                    raise

    def sweep_incomplete_uploads(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        pending = [self._root]
        with self._pool.connection() as conn, self._fs.errors("the artifact root"):
            while pending:
                directory = pending.pop()
                try:
                    entries = self._fs.listdir(conn, directory)
                except NotFound:
                    continue
                for name, st in entries:
                    full = posixpath.join(directory, name)
                    if st.is_dir and not name.startswith(RESERVED_PREFIX):
                        pending.append(full)
                    elif name.startswith(TEMP_PREFIX) and st.mtime < cutoff:
                        with contextlib.suppress(NotFound):
                            self._fs.remove(conn, full)
                            removed += 1
        return removed

    def close(self) -> None:
        self._pool.close()


class _RemoteUpload(Upload, Generic[C]):
    def __init__(
        self,
        storage: RemoteStorage[C],
        conn: C,
        path: ArtifactPath,
        writer: RemoteWriter,
        temp: str,
        target: str,
        created: list[str],
        *,
        keep: bool = False,
    ) -> None:
        self._keep = keep  # a resumable upload: an abort keeps the bytes for a later resume
        self._storage = storage
        self._fs = storage._fs
        self._conn: C | None = conn
        self._path = path
        self._writer: RemoteWriter | None = writer
        self._temp = temp
        self._target = target
        self._created = created
        self._written = 0
        self._report: Callable[[str | None], None] | None = None
        self._reported = False

    def on_cleanup_handle(self, report: Callable[[str | None], None]) -> None:
        """Reports the temporary file's token before the write that takes it past
        `RECORDED_FROM` bytes, and None once the file is gone (renamed into place, or removed):
        one whose removal failed (storage unreachable, or this server killed) is then removed
        by a sweeper (`RemoteStorage.discard_leftover`) instead of staying for a day."""
        if not self._keep:  # a resumable upload's session is its record
            self._report = report

    def _gone(self) -> None:
        if self._reported and self._report is not None:
            self._reported = False
            self._report(None)

    def _release(self, *, broken: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._storage._pool.checkin(conn, broken=broken)

    def write(self, data: bytes | memoryview) -> None:
        if self._writer is None:
            raise RuntimeError("upload already finished")
        report = self._report
        if report is not None and not self._reported and self._written + len(data) > RECORDED_FROM:
            self._reported = True
            report(posixpath.basename(self._temp)[len(TEMP_PREFIX) :])  # raising: abort removes
        with self._fs.errors(f"'{self._path}'"):
            self._writer.write(data)
        self._written += len(data)

    def commit(self, sha256: str, *, overwrite: bool, durable: bool = True) -> Entry:
        writer, conn = self._writer, self._conn
        if writer is None or conn is None:
            raise RuntimeError("upload already finished")
        fs, target = self._fs, self._target
        try:
            with fs.errors(f"'{self._path}'"):
                self._writer = None
                writer.close()
                st = fs.stat(conn, self._temp)
                if st is None:
                    raise Unavailable(f"the upload of '{self._path}' vanished before its commit")
                existing = fs.stat(conn, target)
                if existing is not None and existing.is_dir:
                    raise FailedPrecondition(
                        f"'{self._path}' became a directory during the upload; nothing was stored"
                    )
                if overwrite and existing is not None:
                    with contextlib.suppress(NotFound):
                        fs.remove(conn, _sidecar(target))  # never a stale digest, even briefly
                try:
                    fs.rename(conn, self._temp, target, overwrite=overwrite)
                except AlreadyExists:
                    raise already_exists(self._path) from None
                self._temp = ""
                self._created = []
                self._gone()
                try:
                    record = f"{sha256} {st.size} {st.mtime}".encode()
                    fs.write_small(conn, _sidecar(target), record)
                except ArtifactError as exc:
                    log.warning("could not remember the sha256 of '%s': %s", self._path, exc)
        except BaseException as exc:
            self._abort(broken=not isinstance(exc, ArtifactError) or isinstance(exc, Unavailable))
            raise
        self._release(broken=False)
        return _entry(self._path, st, sha256)

    def abort(self) -> None:
        if self._keep and self._temp:
            writer, self._writer = self._writer, None
            broken = False
            if writer is not None:
                try:
                    with self._fs.errors(f"'{self._path}'"):
                        writer.close()  # what arrived is kept, complete, for the resume
                except ArtifactError:
                    writer.abort()
                    broken = True
            self._temp = ""
            self._release(broken=broken)
            return
        self._abort(broken=False)

    def _abort(self, *, broken: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
        conn = self._conn
        if conn is None:
            return
        if self._temp and not broken:
            try:
                with self._fs.errors(f"'{self._path}'"):
                    with contextlib.suppress(NotFound):
                        self._fs.remove(conn, self._temp)
                    self._gone()
                    self._storage._remove_empty_dirs(conn, self._created)
            except ArtifactError as exc:
                log.warning("could not remove the aborted upload of '%s': %s", self._path, exc)
                broken = True
        elif self._temp:
            # The connection is gone: clean up on a fresh one.
            self._release(broken=True)
            try:
                with self._storage._pool.connection() as fresh, self._fs.errors(f"'{self._path}'"):
                    with contextlib.suppress(NotFound):
                        self._fs.remove(fresh, self._temp)
                    self._gone()
                    self._storage._remove_empty_dirs(fresh, self._created)
            except ArtifactError as exc:  # recorded, it is removed by a sweeper
                log.warning("could not remove the aborted upload of '%s': %s", self._path, exc)
        self._temp = ""
        self._created = []
        self._release(broken=broken)


class _RemoteReader(FileReader, Generic[C]):
    def __init__(
        self, storage: RemoteStorage[C], conn: C, handle: RemoteFileHandle, entry: Entry
    ) -> None:
        self._storage = storage
        self._conn: C | None = conn
        self._handle = handle
        self._broken = False
        self.entry = entry

    def chunks(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        if self._conn is None:
            raise RuntimeError("reader is closed")
        end = self.entry.size if limit == 0 else min(self.entry.size, offset + limit)
        if offset >= end:
            return
        position = offset
        finished = False
        errors: Callable[[str], contextlib.AbstractContextManager[None]] = self._storage._fs.errors
        try:
            with errors(f"'{self.entry.path}'"):
                for data in self._handle.read(offset, end - offset, chunk_size):
                    position += len(data)
                    yield data
            finished = True
        finally:
            if not finished:
                self._broken = True  # a transfer stopped midway leaves the connection unusable
        if position < end:
            self._broken = True
            self._short_read(position)

    def _short_read(self, position: int) -> None:
        """A read that ended early: the file shrank (DATA_LOSS), or the connection ended
        without an error (some paramiko versions report a reset as the end of the file), which
        is UNAVAILABLE. A fresh connection's stat tells which; if storage is unreachable, that
        stat raises UNAVAILABLE itself."""
        storage = self._storage
        with storage._pool.connection() as conn, storage._fs.errors(f"'{self.entry.path}'"):
            st = storage._fs.stat(conn, storage._remote(self.entry.path))
        if st is not None and st.size >= self.entry.size:
            raise Unavailable(
                f"the connection to storage ended while reading '{self.entry.path}' at byte "
                f"{position} of {self.entry.size}; retry"
            )
        raise DataLoss(
            f"'{self.entry.path}' shrank to {position} bytes while being read "
            f"(it was {self.entry.size}); it was modified outside artifactd"
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            self._handle.close()
        except Exception:  # closing must not fail a finished download
            self._broken = True
        self._storage._pool.checkin(conn, broken=self._broken or not self._handle.reusable)
