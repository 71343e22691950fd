"""`ArtifactdFile`: a file of an artifactd server opened through fsspec.

Reading (`rb`) is fsspec's buffered file over range reads: every block its cache asks for is one
DownloadArtifact stream of exactly that range, so seeking to a Parquet footer and reading two
column chunks moves those bytes, not the file. The file is pinned to the version it was opened
on: a block read after the file was replaced on the server raises instead of mixing versions.

Writing (`wb`, `xb`) streams: the first block written starts one `log_stream` upload in a
thread, later blocks go to it through a small bounded queue (memory stays a few blocks however
large the file), and the server publishes the file atomically only when the stream ends. So a
file that is closed appears whole; one discarded — an exception inside `with`, a `close()` while
an exception raised since the open is propagating (see `close`), `discard()`, an object dropped
without `close()`, a failed transaction — makes the upload fail and nothing appears, not even an
empty file. `xb` refuses to replace an existing file, on the server.
"""

from __future__ import annotations

import errno
import sys
import threading
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

from artifactd.client import ArtifactClient, ArtifactInfo
from artifactd.client.streams import ChunkQueue
from artifactd.filesystem.errors import is_a_directory, os_error
from artifactd.protocol import errors

if TYPE_CHECKING:
    from artifactd.filesystem.spec import ArtifactdFileSystem

UPLOAD_QUEUE_BLOCKS = 4
"""Blocks written but not yet taken by the upload: what a writer holds beyond its own buffer."""

MODES = ("rb", "wb", "xb")


class Discarded(Exception):
    """Why an upload was made to fail: its file was discarded before it was closed."""


class ArtifactdFile(AbstractBufferedFile):
    """A file opened by `ArtifactdFileSystem.open`; see the module docstring."""

    fs: ArtifactdFileSystem

    def __init__(
        self,
        fs: ArtifactdFileSystem,
        path: str,
        mode: str = "rb",
        block_size: int | str | None = "default",
        autocommit: bool = True,
        cache_type: str = "readahead",
        cache_options: dict[str, Any] | None = None,
        size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise NotImplementedError(
                f"mode {mode!r}: artifacts are read ('rb') or written whole ('wb', or 'xb' to "
                "refuse replacing one); an artifact cannot be appended to or changed in place"
            )
        self._upload: _StreamUpload | None = None
        self._discarded = False
        self._raised_before = sys.exc_info()[1]  # see close
        if mode == "rb":
            details = fs.info(path)
            if details["type"] != "file":
                raise is_a_directory(path)
            self._details = details  # also what every range read must still find
            size = details["size"]
        elif mode == "xb" and fs.exists(path):
            raise FileExistsError(errno.EEXIST, "the file exists (mode 'xb')", path)
        super().__init__(
            fs, path, mode, block_size, autocommit, cache_type=cache_type,
            cache_options=cache_options, size=size, **kwargs,
        )  # fmt: skip

    # -- reading ---------------------------------------------------------------------------

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.read_range(self.path, start, end, pinned=self.details)

    # -- writing ---------------------------------------------------------------------------

    def _initiate_upload(self) -> None:
        self._upload = _StreamUpload(
            self.fs.client(), self.path, self.fs.run_id, overwrite=self.mode == "wb"
        )

    def _upload_chunk(self, final: bool = False) -> bool:
        upload = self._uploading()
        upload.send(self.buffer.getvalue(), self)
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Ends the upload: the server publishes the file (at `close`, or at the end of a
        transaction for files opened in one). A file already discarded stays discarded."""
        if self._discarded:
            return
        upload = self._uploading()
        self._upload = None
        upload.finish(self)

    def discard(self) -> None:
        """Abandons the upload: nothing is published."""
        self._discarded = True
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.cancel()

    def _uploading(self) -> _StreamUpload:
        if self._upload is None:
            raise ValueError(f"{self.path!r} has no upload in progress (already committed?)")
        return self._upload

    def close(self) -> None:
        """Publishes a file being written (fsspec's `close`), unless an exception raised since
        it was opened is on its way up: then the file was closed by a context manager's exit,
        a `finally` or an `except` on the way (`fsspec.open`'s, pyarrow's ParquetWriter's,
        pandas' handles), and publishing would store a truncated file as if it were whole;
        it is discarded instead."""
        failing = sys.exc_info()[1]
        if self.writable() and failing is not None and failing is not self._raised_before:
            self.discard()
            self.closed = True
            return
        super().close()

    def __exit__(self, *exc_info: object) -> None:
        """An exception inside `with` discards a file being written, instead of publishing
        what was written before it (fsspec's default closes, and so would publish)."""
        if exc_info[0] is not None and self.writable():
            self.discard()
            self.closed = True
            return
        self.close()

    def __del__(self) -> None:
        """A writer dropped without `close()` is discarded, never published half-written."""
        if not self.closed and "r" not in self.mode:
            self.discard()
            self.closed = True
            return
        super().__del__()


class _StreamUpload:
    """One `ArtifactClient.log_stream` call in a thread of its own, fed block by block."""

    def __init__(self, client: ArtifactClient, path: str, run_id: str | None, overwrite: bool):
        self._path = path
        self._queue = ChunkQueue(UPLOAD_QUEUE_BLOCKS)
        self._info: ArtifactInfo | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(client, run_id, overwrite), name="artifactd-fsspec-upload",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def _run(self, client: ArtifactClient, run_id: str | None, overwrite: bool) -> None:
        try:
            self._info = client.log_stream(self._queue, self._path, run_id=run_id,
                                           overwrite=overwrite)  # fmt: skip
        except BaseException as exc:  # raised in the writer's thread, by send or finish
            self._error = exc
        finally:
            self._queue.abandon()  # a writer waiting on a full queue stops waiting

    def send(self, data: bytes, file: ArtifactdFile) -> None:
        """Hands a block to the upload (waiting while the queue is full); raises the upload's
        error if it already ended."""
        if not self._queue.put(data):
            self._thread.join()
            self._raise(file)

    def finish(self, file: ArtifactdFile) -> ArtifactInfo:
        self._queue.finish()
        self._thread.join()
        self._raise(file)
        if self._info is None:  # the thread ended without a result or an error
            raise OSError(errno.EIO, "the upload ended without an answer", self._path)
        return self._info

    def cancel(self) -> None:
        self._queue.fail(Discarded(f"{self._path!r} was discarded before it was closed"))
        self._thread.join()

    def _raise(self, file: ArtifactdFile) -> None:
        exc = self._error
        if exc is None:
            return
        if isinstance(exc, errors.FailedPrecondition) and file.fs.isdir(self._path):
            raise is_a_directory(self._path, exc) from exc
        if isinstance(exc, errors.ArtifactError):
            raise os_error(exc, self._path) from exc
        raise exc
