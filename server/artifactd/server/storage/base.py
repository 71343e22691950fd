"""The storage adapter interface: the few verbs every backend implements.

Adapters receive only validated `ArtifactPath`s and raise only `artifactd.errors` exceptions;
they know nothing about gRPC. Everything that is the same for every backend — the upload
protocol, size and digest checks, paging tokens, chunk sizes — lives above them, in the servicer
and its helpers, so a backend is only the mapping of these verbs onto its storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

from artifactd.paths import ArtifactPath


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
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self, sha256: str, *, overwrite: bool, durable: bool = True) -> Entry:
        """Makes the file visible atomically, recording its digest.

        With `overwrite=False` it raises `AlreadyExists` if anything is at the path by then.
        With `durable=False` the new name may not survive a crash until `Storage.make_durable`
        is called for it (a batch pays that cost once per directory, not once per file).
        After a failed commit the upload is aborted.
        """

    @abstractmethod
    def abort(self) -> None:
        """Discards what was written; safe to call more than once and after `commit`."""

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
    def start_upload(self, path: ArtifactPath) -> Upload:
        """Prepares a write of the file at `path` (`FailedPrecondition` if it cannot be one)."""

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

    def make_durable(self, paths: Iterable[ArtifactPath]) -> None:  # noqa: B027 - optional
        """Makes the commits of `paths` (made with `durable=False`) survive a crash."""

    def sweep_incomplete_uploads(self, older_than: float) -> int:
        """Removes what uploads killed with their server left behind; returns how many.

        Backends whose incomplete uploads vanish by themselves keep this default.
        """
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Releases connections; called once at server shutdown."""
