"""Receiving files from an upload stream: the part of LogArtifact(s) that no backend repeats.

Bytes are hashed and size-checked as they arrive and written straight to the backend's invisible
upload; only a file whose size and sha256 match what the client declared is committed. The
`UploadStream` state machine reads the header / data / finish messages of either RPC.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import crc32c

from artifactd.protocol.background import BACKGROUND_WRITE_THRESHOLD, BackgroundConsumer
from artifactd.protocol.errors import (
    Aborted,
    ArtifactError,
    DataLoss,
    InvalidArgument,
    ResourceExhausted,
    excerpt,
)
from artifactd.protocol.paths import ArtifactPath
from artifactd_server.domain import limits
from artifactd_server.domain.scopes import Scope
from artifactd_server.storage.base import (
    PRECHECKED_FROM,
    Entry,
    ResumableWrites,
    Storage,
    Upload,
)

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

UPLOAD_WRITER_DEPTH = 4
"""Chunks (1 MiB each) a large upload's writer thread may have waiting, on the server: every
stream holds that many at most, so concurrent uploads multiply it. Against 16 (the default,
which the client's downloads keep), 4 concurrent 1 GiB uploads peaked at 162-173 MB of server
RSS instead of 173-215 MB (8 alternating rounds) in the same time (7.10 against 7.11 s), and a
single 1 GiB upload took 1.57 s against 1.69 s (medians of 10 alternating rounds)."""


def parse_digest(value: str, what: str) -> str | None:
    """A lower-case hex sha256, or None when the client sent none."""
    if not value:
        return None
    if not _SHA256.match(value):
        raise InvalidArgument(
            f"{what} must be 64 hex characters (a sha256), got {excerpt(value)!r}"
        )
    return value.lower()


def check_declared_size(size: int, scope: Scope, path: ArtifactPath) -> None:
    """Refuses, before any byte is sent, a file that could never be stored: a negative size,
    one above the server's maximum artifact size, or one larger than the free space of its
    destination where the storage can tell (from `PRECHECKED_FROM` bytes)."""
    if size < 0:
        raise InvalidArgument(f"size must not be negative, got {size}", field="size")
    if size > limits.MAX_ARTIFACT_SIZE:
        raise InvalidArgument(
            f"'{path}' declares {size} bytes; the largest artifact this server takes is "
            f"{limits.MAX_ARTIFACT_SIZE} bytes (5 TiB)",
            field="size",
        )
    if size < PRECHECKED_FROM:
        return  # a full disk refuses it at the write, with the same status (PRECHECKED_FROM)
    free = scope.storage.free_bytes(scope.full(path))
    if free is not None and size > free:
        raise ResourceExhausted(
            f"no space left for '{path}' on the artifact store: it declares {size} bytes and "
            f"{free} are free; nothing was stored"
        )


@dataclass(frozen=True)
class Declared:
    """The checksums a finish message declared (None: not sent)."""

    sha256: str | None = None
    crc32c: int | None = None


@dataclass(frozen=True)
class Resume:
    """A resumable upload being continued: append at `offset` to the bytes kept under `token`."""

    storage: ResumableWrites
    token: str
    offset: int
    finished: Callable[[], None]
    """Called once the file is published (closes the session)."""
    keepalive: Callable[[], None] | None = None
    """Called for every chunk written to storage: keeps the session from expiring while it is
    in use."""


class Tracking(Protocol):
    """Records what a new upload starts in storage, so that a sweeper can discard it if this
    server dies mid-stream (`domain.streamed`)."""

    def follow(self, upload: Upload) -> None:
        """Called once the storage upload exists, before any byte is written to it."""

    def keepalive(self) -> None:
        """Called for every chunk written to storage (on the writer thread when there is one)."""

    def confirm(self) -> None:
        """Called once the bytes passed every check, before the file is published; raises if
        what storage held was discarded meanwhile."""


@dataclass(frozen=True)
class UploadSpec:
    """What the client declared about one file before sending it."""

    path: ArtifactPath
    """As the client named it: relative to `scope`."""
    size: int | None
    sha256: str | None
    overwrite: bool
    scope: Scope
    resume: Resume | None = None
    tracking: Tracking | None = None
    """For a new upload (not a resumed one, whose session is its record)."""


class IncomingFile:
    """One file arriving in chunks; committed only if every declared check passes."""

    def __init__(self, spec: UploadSpec) -> None:
        self.spec = spec
        self._hash = hashlib.sha256()
        self._crc = crc32c.CRC32CHash()  # cheap: computed whether or not the client sends one
        self._received = 0
        full = spec.scope.full(spec.path)
        resume = spec.resume
        self._keepalive: Callable[[], None] | None = None
        if resume is None:
            self._upload: Upload = spec.scope.storage.start_upload(full, size=spec.size)
            if spec.tracking is not None:
                spec.tracking.follow(self._upload)
                self._keepalive = spec.tracking.keepalive
        else:
            self._keepalive = resume.keepalive
            self._upload = resume.storage.resume_upload(full, resume.token, resume.offset)
            try:  # the digest covers the whole file: read back what earlier streams sent
                for block in resume.storage.read_resumable(full, resume.token):
                    self._hash.update(block)
                    self._crc.update(block)
                    self._received += len(block)
            except BaseException:
                self._upload.abort()
                raise
            if self._received != resume.offset:
                self._upload.abort()
                raise Aborted(f"the kept bytes of '{spec.path}' changed while resuming; retry")
        self._writer: BackgroundConsumer | None = None
        if spec.size is not None and spec.size >= BACKGROUND_WRITE_THRESHOLD:
            try:
                self._writer = BackgroundConsumer(
                    self._store, "upload-writer", depth=UPLOAD_WRITER_DEPTH
                )
            except BaseException:  # no thread to be had: the temporary file must not stay
                self._upload.abort()
                raise

    def _store(self, data: bytes | memoryview) -> None:
        """Writes to storage, on the writer thread when there is one, keeping the session or
        record alive: where bytes reach storage, so neither a writer behind the stream (the
        stream waits for it) nor one draining at the end goes untouched."""
        if self._keepalive is not None:
            self._keepalive()
        self._upload.write(data)

    def write(self, data: bytes | memoryview) -> None:
        self._received += len(data)
        declared = self.spec.size
        if declared is not None and self._received > declared:
            raise DataLoss(
                f"'{self.spec.path}': received more than the declared {declared} bytes; "
                "nothing was stored"
            )
        self._hash.update(data)
        self._crc.update(data)
        if self._writer is None:
            self._store(data)
        else:
            self._writer.put(data)

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.finish()

    def seal(self, final: Declared) -> Sealed:
        """Checks size and checksums; returns the file ready to be published."""
        spec = self.spec
        self._stop_writer()
        if spec.size is not None and self._received != spec.size:
            raise DataLoss(
                f"'{spec.path}': received {self._received} bytes but {spec.size} were declared; "
                "nothing was stored"
            )
        digest = self._hash.hexdigest()
        for claimed, source in ((spec.sha256, "header"), (final.sha256, "finish")):
            if claimed is not None and claimed != digest:
                raise DataLoss(
                    f"'{spec.path}': sha256 of the received bytes is {digest}, but the {source} "
                    f"declared {claimed}; nothing was stored"
                )
        if final.crc32c is not None and final.crc32c != self._crc.checksum:
            raise DataLoss(
                f"'{spec.path}': CRC32C of the received bytes is {self._crc.checksum:08x}, but "
                f"the finish declared {final.crc32c:08x}; nothing was stored"
            )
        if spec.tracking is not None:
            spec.tracking.confirm()
        return Sealed(
            self._upload,
            digest,
            spec.overwrite,
            spec.resume,
            spec.scope.full(spec.path),
            spec.scope.storage,
            self._received,
        )

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stop_writer()
        self._upload.abort()


@dataclass
class Sealed:
    """A file whose bytes passed every check, waiting to be published.

    `prepare` (optional, on any thread) does the slow part of publishing, `commit` the rest;
    a batch prepares its files on the committer pool and commits them in order on its own
    thread (see `Upload.prepare`), so the later of two uploads of one path wins.
    """

    upload: Upload
    digest: str
    overwrite: bool
    resume: Resume | None
    path: ArtifactPath
    """Where it will be published, in storage (not relative to the client's scope)."""
    storage: Storage
    size: int

    def prepare(self) -> None:
        self.upload.prepare(self.digest)

    def discard(self) -> None:
        """Drops the file unpublished: its descriptor and temporary file go (a resumable
        upload keeps its bytes for its session). Safe after `commit`, and more than once."""
        self.upload.abort()

    def commit(self, durable: bool) -> Entry:
        """Publishes the file; `durable` makes the new name survive a crash right away. The
        entry has the path in storage; `scope.relative` turns it into the client's."""
        entry = self.upload.commit(self.digest, overwrite=self.overwrite, durable=durable)
        if self.resume is not None:
            self.resume.finished()
        return entry


class UploadMessage(Protocol):
    """The shape LogArtifactRequest and LogArtifactsRequest share (as `wire.Chunk`s)."""

    @property
    def data(self) -> bytes | memoryview: ...

    def HasField(self, field_name: Any) -> bool: ...  # noqa: N802 - protobuf name


@dataclass
class FileEvent:
    """A file whose stream part is complete: `sealed` to publish, or `error` saying why not."""

    path: str
    sealed: Sealed | None = None
    error: ArtifactError | None = None
    scope: Scope | None = None

    def discard(self) -> None:
        """Releases a sealed file that will not be published (see `Sealed.discard`)."""
        if self.sealed is not None:
            self.sealed.discard()


def _unfinished(current: IncomingFile | None, failed: FileEvent | None) -> FileEvent | None:
    """The event for a file the stream ended in (its data sent, no finish): a refusal it had
    already met says more than the missing finish."""
    if failed is not None:
        return failed
    if current is None:
        return None
    path = str(current.spec.path)
    return FileEvent(
        path,
        error=Aborted(
            f"the stream ended before the finish message of '{path}'; nothing was stored"
        ),
    )


def _unpacked(messages: Iterable[UploadMessage]) -> Iterator[UploadMessage]:
    """The messages, each packed file of a LogArtifacts message (`files`) standing in its place
    as the one message that would have carried its header, data and finish."""
    for message in messages:
        packed = getattr(message, "files", None)  # LogArtifact's messages have no such field
        if not packed:
            yield message
            continue
        if message.HasField("header") or message.HasField("finish") or message.data:
            raise InvalidArgument(
                "a message with packed files sets no header, data or finish of its own"
            )
        for file in packed:
            if not file.HasField("header") or not file.HasField("finish"):
                raise InvalidArgument(
                    "each packed file is whole: it needs its header and its finish"
                )
            yield file


class UploadStream:
    """Splits a stream of upload messages into files.

    `header_of(message)` turns a header message into an `UploadSpec` (raising for bad input),
    and `declared_in(message)` reads the checksums of a finish message. Per-file failures become
    `FileEvent.error` and the file's remaining data is skipped; protocol violations raise
    `InvalidArgument` and end the stream. `before_open(spec)`, if given, runs before a file's
    storage upload starts (a batch publishes what that file depends on there).

    Ownership: a file in progress is this generator's, and it aborts it however the stream
    ends (a protocol violation, a cancelled client, a storage error, the generator closed). A
    sealed file, once yielded, is the consumer's: it must `commit` it or `discard` it.
    """

    def __init__(
        self,
        header_of: Callable[[UploadMessage], tuple[str, Callable[[], UploadSpec]]],
        declared_in: Callable[[UploadMessage], Declared],
        max_files: int,
        before_open: Callable[[UploadSpec], None] | None = None,
    ) -> None:
        self._header_of = header_of
        self._declared_in = declared_in
        self._max_files = max_files
        self._before_open = before_open

    def files(self, messages: Iterable[UploadMessage]) -> Generator[FileEvent, None, None]:
        current: IncomingFile | None = None
        failed: FileEvent | None = None  # the file whose remaining data is being skipped
        started = 0
        try:
            for message in _unpacked(messages):
                if message.HasField("header"):
                    if current is not None or failed is not None:
                        raise InvalidArgument(
                            "a header arrived before the previous file's finish message"
                        )
                    started += 1
                    current, failed = self._open(message, started)
                elif current is None and failed is None:
                    raise InvalidArgument(
                        "data or finish arrived before any header message"
                        if started == 0
                        else "data or finish arrived after the file's finish message; "
                        "each file is a header, its data, then one finish"
                    )
                data = message.data
                if current is not None and data:
                    try:
                        current.write(data)
                    except ArtifactError as exc:
                        current.abort()
                        failed, current = FileEvent(str(current.spec.path), error=exc), None
                if message.HasField("finish"):
                    incoming, skipped = current, failed
                    current = failed = None  # from here on the event is the consumer's
                    if skipped is not None:
                        yield skipped
                    elif incoming is not None:
                        yield self._seal(incoming, message)
        finally:
            if current is not None:
                current.abort()
        unfinished = _unfinished(current, failed)
        if unfinished is not None:
            yield unfinished

    def _open(
        self, message: UploadMessage, number: int
    ) -> tuple[IncomingFile | None, FileEvent | None]:
        """Starts the file a header announces, or the failure event that skips its data."""
        raw_path, spec_of = self._header_of(message)
        try:
            if number > self._max_files:
                raise InvalidArgument(
                    f"one stream carries at most {self._max_files} files; "
                    "start another stream for the rest"
                )
            spec = spec_of()
            if self._before_open is not None:
                self._before_open(spec)
            return IncomingFile(spec), None
        except ArtifactError as exc:
            return None, FileEvent(raw_path, error=exc)

    def _seal(self, incoming: IncomingFile, message: UploadMessage) -> FileEvent:
        path = str(incoming.spec.path)
        try:
            sealed = incoming.seal(self._declared_in(message))
        except ArtifactError as exc:
            incoming.abort()
            return FileEvent(path, error=exc)
        except BaseException:
            incoming.abort()
            raise
        return FileEvent(path, sealed=sealed, scope=incoming.spec.scope)
