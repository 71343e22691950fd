"""The storage adapter interface: the few verbs every backend implements.

Adapters receive only validated `ArtifactPath`s and raise only `protocol.errors` exceptions;
they know nothing about gRPC. Everything that is the same for every backend — the upload
protocol, size and digest checks, paging tokens, chunk sizes — lives above them, in the servicer
and its helpers, so a backend is only the mapping of these verbs onto its storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from artifactd.protocol.paths import ArtifactPath

PRECHECKED_FROM = 1024 * 1024
"""Uploads declaring at least this many bytes are checked before their bytes are sent (free
space, a directory in the way), so that a refusal spares the transfer. Smaller ones are refused
by the write or the publish instead, with the same status. Each check is a system call per
file (a statvfs, a stat) on the thread receiving the stream, and each system call releases and
takes back the GIL: on a directory log of 1,000 files of 16 KiB, skipping the two cut the
server's CPU by 8-11 % and the log's time by 7-13 % (two alternating A/Bs of 40 rounds)."""

STARTING = ""
"""The cleanup handle an upload reports just before the storage call that names it
(`Upload.on_cleanup_handle`): recorded as is, an empty handle in the backend store."""


@dataclass(frozen=True)
class Entry:
    """One stored file or directory."""

    path: ArtifactPath
    is_dir: bool
    size: int
    mtime_ns: int
    sha256: str | None = None


@dataclass(frozen=True)
class StorageCapabilities:
    """Optional features a backend declares (callers ask; they never probe by catching errors)."""

    range_reads: bool = True
    multipart_upload: bool = False
    presigned_urls: bool = False


class Upload(ABC):
    """A file being written: invisible until `commit`, gone without a trace after `abort`."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def commit(self, sha256: str, *, overwrite: bool, durable: bool = True) -> Entry:
        """Makes the file visible atomically, recording its digest.

        With `overwrite=False` it raises `AlreadyExists` if anything is at the path by then.
        With `durable=False` the new name may not survive a crash until `Storage.make_durable`
        is called for it (a batch pays that cost once per directory, not once per file).
        After a failed commit the upload is aborted.
        """

    def prepare(self, sha256: str) -> None:  # noqa: B027 - optional: most have nothing to split
        """Does the slow part of committing that holds no lock other uploads wait for (the
        local adapter's digest and fsync of the bytes), ahead of `commit` with the same
        `sha256`, which then does the rest.

        A batch runs this on other threads while one thread publishes its files in order:
        publishing (a rename) takes the directory's lock, as creating the next file does, and
        renames spread over threads spin on that lock (measured: 15 % of the server's CPU for
        1,000 small files). After a failed prepare the upload is aborted.
        """

    @abstractmethod
    def abort(self) -> None:
        """Discards what was written; safe to call more than once and after `commit`."""

    def on_cleanup_handle(self, report: Callable[[str | None], None]) -> None:  # noqa: B027
        """Asks to be told what this upload would leave in storage if its server died.

        A process killed mid-upload (SIGKILL, OOM) cannot clean up, and with several replicas on
        one destination no other process can tell a dead upload from another replica's live
        one; only a record made while the upload runs can (`domain.streamed` keeps it in the
        backend store). So an upload that starts holding something in storage that outlives its
        process, and that the storage does not expire soon by itself, calls `report(handle)`
        first, on the thread that writes and before any bytes are stored under it: `handle` is
        a string by which `Storage.discard_leftover(path, handle)` discards it later, from any
        process. If `report` raises, the write fails with that error and `abort` discards what
        was started. `report(None)` follows once nothing is left (committed, or aborted); never
        after an abort that failed, so the record stays for a sweeper. `report(None)` must not
        raise.

        A storage that learns the handle only from the call that creates the upload (S3 names
        a multipart upload when it creates it) reports `STARTING` just before that call: the
        record then says "an upload to this path is being created", so a server killed between
        the call and the report of the real handle leaves a record too, which a sweeper settles
        with `Storage.discard_unrecorded`.

        The S3 adapter reports its multipart upload id (a file larger than one part), the GCS
        adapter the id naming its hidden chunk objects (`.artifactd-upload-<id>-<n>`, a file
        larger than one chunk). The other backends keep this no-op; what a killed server leaves
        there goes otherwise:
        - local disks and remote file systems (NFS, FTP, SFTP, HDFS): a temporary file named
          with its process's owner mark, which the start-up sweep of any process sharing the
          root removes once that owner's lock is free (`owners.py`);
        - Azure Blob: uncommitted blocks staged against the final name, invisible, which Azure
          discards after a week.
        """

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


class FileReader(ABC):
    """An open file: `entry` describes exactly the bytes that `chunks` yields."""

    entry: Entry

    @abstractmethod
    def chunks(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        """Yields the bytes [offset, offset+limit) (to the end when `limit` is 0)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> FileReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Storage(ABC):
    """One artifact root on one backend."""

    name: str
    capabilities: StorageCapabilities

    @property
    @abstractmethod
    def uri(self) -> str:
        """The root's canonical URI (`file:///srv/artifacts`); locations below it extend it."""

    @abstractmethod
    def start_upload(self, path: ArtifactPath, *, size: int | None = None) -> Upload:
        """Prepares a write of the file at `path` (`FailedPrecondition` if it cannot be one).

        `size`: the bytes the upload declares, where known. Under `PRECHECKED_FROM` an adapter
        may leave to the publish a check that would only spare sending the bytes."""

    @abstractmethod
    def open_file(self, path: ArtifactPath) -> FileReader:
        """Opens a file for reading (`NotFound`, or `FailedPrecondition` for a directory)."""

    @abstractmethod
    def stat(self, path: ArtifactPath) -> Entry:
        """Describes a file or directory (`NotFound` if neither)."""

    @abstractmethod
    def iter_tree(
        self, path: ArtifactPath, *, recursive: bool, after: ArtifactPath | None = None
    ) -> Iterator[Entry]:
        """Entries below the directory `path`, ordered by their path segments.

        Only direct children unless `recursive`; only entries ordered after `after`, so a page
        can resume where the previous one stopped without re-reading what it already returned.
        `NotFound` if `path` does not exist, `FailedPrecondition` if it is a file.
        """

    @abstractmethod
    def delete(self, path: ArtifactPath) -> bool:
        """Deletes a file or a directory tree; returns whether anything was there."""

    def free_bytes(self, path: ArtifactPath) -> int | None:
        """Bytes a new file at `path` may take, or None where the storage cannot tell (object
        stores): an upload declaring more is refused before its bytes are sent."""
        return None

    def prepare_group(self, uploads: Sequence[tuple[Upload, str]]) -> list[BaseException | None]:
        """`Upload.prepare` for several uploads of this storage (upload, sha256) at once; per
        upload None, or what its preparation raised (it aborted that upload only).

        One by one by default; the local adapter makes the whole group durable in one pass."""
        failures: list[BaseException | None] = []
        for upload, sha256 in uploads:
            try:
                upload.prepare(sha256)
            except Exception as exc:
                failures.append(exc)
            else:
                failures.append(None)
        return failures

    def make_durable(self, paths: Iterable[ArtifactPath]) -> None:  # noqa: B027 - optional
        """Makes the commits of `paths` (made with `durable=False`) survive a crash."""

    def discard_leftover(self, path: ArtifactPath, handle: str) -> None:  # noqa: B027
        """Discards what an upload to `path` left under `handle` (see `Upload.on_cleanup_handle`);
        no error if it is gone (completed or discarded meanwhile). Called by the sweeper of any
        process, for an upload whose server died; storages that report no handles keep this
        no-op."""

    def discard_unrecorded(
        self, path: ArtifactPath, initiated_before: float, recorded: Collection[str]
    ) -> int:
        """Discards the uploads to `path` that a server killed between creating them and
        recording their handle left: those started before `initiated_before` (epoch seconds)
        whose handle is not in `recorded` (every handle the backend store holds); returns how
        many. Only storages that report `STARTING` have such uploads."""
        return 0

    def sweep_incomplete_uploads(self, older_than: float) -> int:
        """Removes what uploads killed with their server left behind; returns how many.

        Backends whose incomplete uploads vanish by themselves keep this default.
        """
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Releases connections; called once at server shutdown."""


@dataclass(frozen=True)
class PresignedRequest:
    """An HTTP request a client makes straight to storage, signed by the server's credentials."""

    url: str
    method: str
    headers: dict[str, str]
    expires_at: float  # seconds since the epoch


@dataclass(frozen=True)
class StoredPart:
    """A part of a multipart upload as storage holds it (or as a client says it uploaded it)."""

    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class PartLimits:
    """The backend's rules for multipart uploads."""

    min_size: int  # every part but the last
    max_size: int
    max_parts: int


class DirectTransfers(ABC):
    """Optional, for backends that take and serve bytes without the server in the middle.

    A storage class that inherits this supports presigned multipart uploads and presigned
    downloads. Sessions (who may complete what, where, until when) are the server's business
    (`artifactd_server.domain.multipart`); the adapter only maps these verbs onto its storage.
    Nothing is visible at `path` until `complete_multipart` succeeds.
    """

    part_limits: PartLimits

    def direct_upload_refusal(self) -> str | None:
        """Why direct uploads cannot be offered with this configuration (None: they can)."""
        return None

    @abstractmethod
    def create_multipart(self, path: ArtifactPath, *, size: int, sha256: str | None) -> str:
        """Starts a multipart upload to `path`; returns the backend's id for it."""

    @abstractmethod
    def presign_part(
        self, path: ArtifactPath, upload_id: str, number: int, size: int, ttl: float
    ) -> PresignedRequest:
        """A PUT of part `number` (1-based, `size` bytes) valid for `ttl` seconds."""

    @abstractmethod
    def list_parts(self, path: ArtifactPath, upload_id: str) -> list[StoredPart]:
        """The parts storage holds, by number; `NotFound` when the upload is gone."""

    @abstractmethod
    def complete_multipart(
        self,
        path: ArtifactPath,
        upload_id: str,
        parts: Sequence[StoredPart],
        *,
        size: int,
        sha256: str | None,
        overwrite: bool,
    ) -> Entry:
        """Publishes the parts (already checked against `list_parts`) as the file at `path`.

        `AlreadyExists` with `overwrite=False` if a file is there by then (atomically where the
        backend can).
        """

    @abstractmethod
    def abort_multipart(self, path: ArtifactPath, upload_id: str) -> None:
        """Discards the upload and its parts; no error if it is already gone."""

    @abstractmethod
    def presign_download(self, path: ArtifactPath, ttl: float) -> tuple[Entry, PresignedRequest]:
        """The file at `path` and a GET for exactly that version, valid for `ttl` seconds."""


class ResumableWrites(ABC):
    """Optional, for backends whose uploads go through the server (disk, NFS, FTP, SFTP, HDFS):
    an upload whose connection breaks keeps what arrived, invisibly, and continues later.

    The bytes live in a hidden temporary file next to the destination, named by a token. An
    `Upload` from `resume_upload` appends to it; its `abort` keeps the bytes (the client may come
    back), `commit` publishes them like any upload, and `discard_resumable` removes them.
    """

    @abstractmethod
    def start_resumable(self, path: ArtifactPath) -> str:
        """Creates the empty temporary file for an upload to `path`; returns its token."""

    @abstractmethod
    def resumable_size(self, path: ArtifactPath, token: str) -> int:
        """How many bytes are kept (`NotFound` if they are gone)."""

    @abstractmethod
    def resume_upload(self, path: ArtifactPath, token: str, offset: int) -> Upload:
        """Appends from `offset`, which must be `resumable_size` (`FailedPrecondition` if not)."""

    @abstractmethod
    def read_resumable(self, path: ArtifactPath, token: str) -> Iterator[bytes]:
        """The bytes kept so far (to rebuild the digest of what arrived earlier)."""

    @abstractmethod
    def discard_resumable(self, path: ArtifactPath, token: str) -> None:
        """Removes the kept bytes; no error if they are gone."""
