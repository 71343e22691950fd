"""What every object-store backend (S3, GCS, Azure Blob) shares.

Paths map to object names `<prefix>/<path>`; a directory is any name prefix ending at a `/`
(object stores have no directories: one exists while some object lies below it). A subclass
supplies a handful of primitives (HEAD one object, list one level with a delimiter, test for
anything below a prefix, delete one object and everything below a prefix, open a reader, start an
upload); this module turns them into the `Storage` verbs:

- listings read one directory level at a time, each level's names sorted, because the stores list
  in byte order (`a-b` < `a.txt` < `a/x`) while entries are ordered by path segments; `after`
  resumes a walk by starting each level's listing just before `after`'s segment there;
- a delete removes the object `<key>` and every object below `<key>/`, never `<key>bar`;
- a file may not replace a directory nor live below a file (checked when an upload starts:
  not atomic, unlike on disk);
- uploads (`BufferedUpload`) hold up to one part in memory: a file no larger than a part is
  stored with one request at commit, a larger one is sent part by part and assembled at commit,
  invisible until then.

Subclasses raise only `artifactd.protocol.errors`; `http_error` is the shared status -> error table.
"""

from __future__ import annotations

import logging
import re
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from artifactd.protocol.errors import (
    ArtifactError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from artifactd.protocol.paths import ROOT, ArtifactPath, InvalidPath, parse
from artifactd_server.storage.base import Entry, FileReader, Storage, Upload
from artifactd_server.storage.common import child_path, is_reserved

log = logging.getLogger(__name__)

DIGEST_KEY = "sha256"
"""The object-metadata name the sha256 is kept under, on every store."""
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_VERIFIED_PARENT_TTL = 2.0
_VERIFIED_PARENTS_MAX = 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as its store describes it."""

    size: int
    mtime_ns: int
    sha256: str | None = None
    version: Any = None
    """What a reader pins (an ETag, a generation) so an overwrite cannot mix versions."""


def valid_digest(value: str | None) -> str | None:
    return value if value is not None and _DIGEST.match(value) else None


def listable(name: str) -> bool:
    return bool(name) and not is_reserved(name)


class ObjectStoreStorage(Storage):
    """An artifact root under `<scheme>://<container>/<prefix>` on an object store."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._verified_parents: dict[tuple[str, ...], float] = {}

    # -- what a store supplies ---------------------------------------------------------------

    @abstractmethod
    def _head_key(self, key: str, path: ArtifactPath) -> ObjectInfo | None:
        """The object at `key`, or None when there is none."""

    @abstractmethod
    def _any_below(self, prefix: str, path: ArtifactPath) -> bool:
        """Whether some object's name starts with `prefix`."""

    @abstractmethod
    def _list_level(
        self, prefix: str, start_after: str | None, path: ArtifactPath
    ) -> Iterator[tuple[str, ObjectInfo | None]]:
        """One level below `prefix` (delimiter `/`): (name after prefix, info), or
        (sub-prefix name without its trailing `/`, None) for a deeper level."""

    @abstractmethod
    def _delete_key(self, key: str, path: ArtifactPath) -> None: ...

    @abstractmethod
    def _delete_below(self, prefix: str, path: ArtifactPath) -> bool:
        """Deletes every object whose name starts with `prefix`; whether there was one."""

    @abstractmethod
    def _reader(self, entry: Entry, info: ObjectInfo) -> FileReader: ...

    @abstractmethod
    def _upload(self, path: ArtifactPath) -> Upload: ...

    # -- keys --------------------------------------------------------------------------------

    def key(self, path: ArtifactPath) -> str:
        """The object name of `path` (the root's is the prefix itself)."""
        parts = ([self._prefix] if self._prefix else []) + list(path.parts)
        return "/".join(parts)

    def dir_prefix(self, path: ArtifactPath) -> str:
        """The name prefix every object below the directory `path` starts with."""
        key = self.key(path)
        return f"{key}/" if key else ""

    def _head(self, path: ArtifactPath) -> ObjectInfo | None:
        return self._head_key(self.key(path), path)

    def _is_dir(self, path: ArtifactPath) -> bool:
        return path.is_root or self._any_below(self.dir_prefix(path), path)

    def _missing(self, path: ArtifactPath) -> ArtifactError:
        return NotFound(f"'{path}' does not exist")

    # -- writing -----------------------------------------------------------------------------

    def start_upload(self, path: ArtifactPath, *, size: int | None = None) -> Upload:
        self.check_writable(path)
        return self._upload(path)

    def check_writable(self, path: ArtifactPath) -> None:
        """Refuses what cannot become a file: the root, a directory, a path below a file."""
        if path.is_root:
            raise FailedPrecondition("the artifact root is a directory, not a file")
        if self._is_dir(path):
            raise FailedPrecondition(f"'{path}' is a directory; a file cannot replace it")
        self._check_parents(path)

    def _check_parents(self, path: ArtifactPath) -> None:
        """Refuses a path below a file (the disk backend cannot have both; keep stores the same)."""
        key = path.parent.parts
        now = time.monotonic()
        verified = self._verified_parents.get(key)
        if verified is not None and now - verified < _VERIFIED_PARENT_TTL:
            return
        for depth in range(1, len(key) + 1):
            if self._head(ArtifactPath(key[:depth])) is not None:
                raise FailedPrecondition(
                    f"a parent of '{path}' is a file, so '{path}' cannot be created"
                )
        if len(self._verified_parents) >= _VERIFIED_PARENTS_MAX:
            self._verified_parents.clear()
        self._verified_parents[key] = now

    # -- reading -----------------------------------------------------------------------------

    def stat_file(self, path: ArtifactPath) -> tuple[Entry, ObjectInfo]:
        """The file at `path` (`NotFound`, or `FailedPrecondition` for a directory)."""
        if path.is_root:
            raise FailedPrecondition("the artifact root is a directory; download it as a directory")
        info = self._head(path)
        if info is None:
            if self._is_dir(path):
                raise FailedPrecondition(f"'{path}' is a directory, not a file")
            raise self._missing(path)
        return _file_entry(path, info), info

    def open_file(self, path: ArtifactPath) -> FileReader:
        return self._reader(*self.stat_file(path))

    def stat(self, path: ArtifactPath) -> Entry:
        if path.is_root:
            return Entry(ROOT, True, 0, 0)
        info = self._head(path)
        if info is not None:
            return _file_entry(path, info)
        if self._is_dir(path):
            return Entry(path, True, 0, 0)
        raise self._missing(path)

    def iter_tree(
        self, path: ArtifactPath, *, recursive: bool, after: ArtifactPath | None = None
    ) -> Iterator[Entry]:
        if not self._is_dir(path):
            if self._head(path) is not None:
                raise FailedPrecondition(f"'{path}' is a file, not a directory")
            raise self._missing(path)
        yield from self._walk(path, recursive, after)

    def _walk(
        self, directory: ArtifactPath, recursive: bool, after: ArtifactPath | None
    ) -> Iterator[Entry]:
        """Like the disk backend's walk: one directory at a time, its names sorted.

        One listing per directory, not one flat listing of the tree: stores list names in byte
        order, where `a-b` and `a.txt` come before `a/...`, while entries are ordered by path
        segments (`a`, `a/...`, `a-b`); reordering a flat listing would mean holding whole
        subtrees in memory. A directory's names are held and sorted, as on disk.
        """
        start_after = None
        deeper = after is not None and len(after.parts) > len(directory.parts)
        if after is not None and deeper and after.is_relative_to(directory):
            # Every name after `after`'s segment here sorts above this one (byte order).
            start_after = self.dir_prefix(directory) + after.parts[len(directory.parts)]
        for child, is_dir, entry in self._children(directory, start_after):
            if after is not None and child.parts <= after.parts:
                if is_dir and recursive and after.is_relative_to(child):
                    yield from self._walk(child, recursive, after)
                continue
            yield entry
            if is_dir and recursive:
                yield from self._walk(child, recursive, None)

    def _children(
        self, directory: ArtifactPath, start_after: str | None
    ) -> list[tuple[ArtifactPath, bool, Entry]]:
        files: dict[str, Entry | None] = {}
        dirs: set[str] = set()
        for name, info in self._list_level(self.dir_prefix(directory), start_after, directory):
            if info is None:
                dirs.add(name)
                continue
            files[name] = None
            child = child_path(directory, name) if listable(name) else None
            if child is not None:
                files[name] = Entry(child, False, info.size, info.mtime_ns)
        children: list[tuple[ArtifactPath, bool, Entry]] = []
        for name in sorted(dirs | files.keys()):
            if not listable(name):
                continue  # a directory marker (`dir/`), or one of the server's own names
            if name in dirs:
                if name in files:
                    log.warning("'%s' is both a file and a directory; listing the directory", name)
                child = child_path(directory, name)
                if child is not None:
                    children.append((child, True, Entry(child, True, 0, 0)))
            elif (entry := files[name]) is not None:
                children.append((entry.path, False, entry))
        return children

    # -- deleting ----------------------------------------------------------------------------

    def delete(self, path: ArtifactPath) -> bool:
        if path.is_root:
            raise FailedPrecondition("refusing to delete the artifact root")
        self._verified_parents.clear()
        existed = False
        if self._head(path) is not None:
            self._delete_key(self.key(path), path)
            existed = True
        # `<key>/` only: `foobar` is not inside `foo`.
        return self._delete_below(self.dir_prefix(path), path) or existed


def _file_entry(path: ArtifactPath, info: ObjectInfo) -> Entry:
    return Entry(path, False, info.size, info.mtime_ns, valid_digest(info.sha256))


class BufferedUpload(Upload):
    """The shared upload policy: up to `part_size` bytes buffered and stored with one request at
    commit (`_put_whole`); a larger file is sent part by part as parts fill (`_send_part`, at
    most one part in memory) and assembled at commit (`_finish_parts`). `_discard` undoes what
    was sent; every step raises `artifactd.protocol.errors` only."""

    def __init__(self, path: ArtifactPath, part_size: int) -> None:
        self._path = path
        self._part_size = part_size
        self._buffer = bytearray()
        self._size = 0
        self._parts_sent = 0
        self._finished = False

    @abstractmethod
    def _send_part(self, data: bytes) -> None: ...

    @abstractmethod
    def _put_whole(self, data: bytes, sha256: str, overwrite: bool) -> None: ...

    @abstractmethod
    def _finish_parts(self, sha256: str, overwrite: bool) -> None: ...

    @abstractmethod
    def _discard(self) -> None:
        """Removes every part sent; must not raise (log instead)."""

    def write(self, data: bytes | memoryview) -> None:
        if self._finished:
            raise RuntimeError("upload already finished")
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= self._part_size:
            part = bytes(memoryview(self._buffer)[: self._part_size])  # one copy, view released
            del self._buffer[: self._part_size]
            self._send_part(part)
            self._parts_sent += 1

    def commit(self, sha256: str, *, overwrite: bool, durable: bool = True) -> Entry:
        if self._finished:
            raise RuntimeError("upload already finished")
        try:
            if self._parts_sent == 0:
                self._put_whole(bytes(self._buffer), sha256, overwrite)
            else:
                if self._buffer:
                    self._send_part(bytes(self._buffer))
                    self._parts_sent += 1
                self._buffer = bytearray()
                self._finish_parts(sha256, overwrite)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._buffer = bytearray()
        return Entry(self._path, False, self._size, time.time_ns(), sha256)

    def abort(self) -> None:
        self._finished = True
        self._buffer = bytearray()
        self._discard()


def http_error(status: int, detail: str, path: ArtifactPath, *, store: str) -> ArtifactError:
    """The shared status table: 404 NotFound, 401/403 PermissionDenied, 429/5xx/timeouts
    Unavailable, 413 ResourceExhausted, anything else FailedPrecondition. `detail` must carry no
    credentials (callers pass the store's error code and message only)."""
    if status == 404:
        return NotFound(f"'{path}' does not exist")
    if status in (401, 403):
        return PermissionDenied(f"the {store} refused access to '{path}': {detail}")
    if status in (408, 429) or status >= 500:
        return Unavailable(f"the {store} is unavailable for '{path}': {detail}")
    if status == 413:
        return ResourceExhausted(f"the {store} refused '{path}': {detail}")
    return FailedPrecondition(f"the {store} refused the request for '{path}': {detail}")


def unreachable(exc: BaseException, path: ArtifactPath, *, store: str) -> ArtifactError:
    """Connection refused/reset, timeouts, a stream cut mid-body: the store may be back later."""
    return Unavailable(f"the {store} could not be reached for '{path}': {type(exc).__name__}")


def parse_bucket_destination(
    destination: str, scheme: str, store: str, bucket_pattern: re.Pattern[str], bucket_rule: str
) -> tuple[str, str]:
    """(bucket, key prefix) of `scheme://bucket/prefix`, the prefix checked by the path grammar."""
    parts = urlsplit(destination)
    if parts.scheme.lower() != scheme:
        raise InvalidArgument(f"{destination!r} is not a {scheme}:// URI")
    if parts.query or parts.fragment or "?" in destination or "#" in destination:
        raise InvalidArgument(
            f"{store} destination {destination!r} may not have a query or fragment"
        )
    bucket = parts.netloc
    if not bucket_pattern.match(bucket) or ".." in bucket:
        raise InvalidArgument(
            f"{store} destination {destination!r}: {bucket!r} is not a valid bucket name "
            f"({bucket_rule})"
        )
    prefix = parts.path.strip("/")
    if prefix:
        try:
            parse(prefix, what=f"{store} key prefix")
        except InvalidPath as exc:
            raise InvalidArgument(f"{store} destination {destination!r}: {exc.message}") from None
    return bucket, prefix
