"""Reading part of a file: one DownloadArtifact stream with `offset` and `limit`, so the server
reads (and sends) only that range, not the file.

What random access needs: Parquet readers fetch a footer and a few column chunks of a file that
may be gigabytes. `RangeReader` is a readable stream of the range that resumes after a broken
stream (from the next byte, while the server is UNAVAILABLE, as whole-file downloads do) and
refuses to stitch together bytes of two versions of a file: every stream's first message carries
the whole file's size, sha256 and modification time, and they must stay the same. A range that
turns out to be the whole file is checked against the server's sha256 as a download is.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any

import grpc

from artifactd.client.rpc import backoff, error, retryable
from artifactd.client.settings import ClientSettings
from artifactd.client.stubs import ArtifactStub
from artifactd.protocol.errors import DataLoss, InvalidArgument
from artifactd.protocol.paths import ArtifactPath
from artifactd.v1 import artifact_service_pb2 as pb


class RangeReader(io.RawIOBase):
    """Bytes `[offset, offset + length)` of one file (to its end when `length` is None) as a
    stream: `read(size)` returns up to `size` bytes, b"" at the end.

    `info` is the whole file's `pb.FileInfo`, known once the first message arrived (after the
    first `read`, or from `start`). An `offset` past the end of the file raises `OutOfRange`; a
    range reaching past the end is cut at the end. A binary raw stream: close it (or use it as a
    context manager) to cancel a stream not read to its end.
    """

    _stream: Any = None  # the DownloadArtifact call being read, when one is open

    def __init__(
        self,
        stub: ArtifactStub,
        settings: ClientSettings,
        path: ArtifactPath,
        run_id: str,
        offset: int = 0,
        length: int | None = None,
    ) -> None:
        if offset < 0 or (length is not None and length < 1):
            raise InvalidArgument(
                f"a range needs an offset >= 0 and a length >= 1 (or none: to the end of the "
                f"file), got {offset} and {length}"
            )
        self._stub = stub
        self._settings = settings
        self.path = path
        self._run_id = run_id
        self._next = offset
        self._end = None if length is None else offset + length
        self.info: pb.FileInfo | None = None
        self._tries = 0
        self._done = False
        self._pending = memoryview(b"")
        self._digest = hashlib.sha256() if offset == 0 else None
        self._chunks = self._receive()
        super().__init__()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Cancels the stream if it is still open (a range not read to its end)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()
        self._done = True
        super().close()

    def start(self) -> pb.FileInfo:
        """Receives the first message now, if it has not arrived, and returns the file's info:
        a missing file, a directory or an offset past the end raises here, before a caller
        starts anything that would consume the bytes (an upload of a copy)."""
        if self.info is None and not self._pending:
            self._pending = next(self._chunks, memoryview(b""))
        if self.info is None:
            raise DataLoss(f"the server sent nothing for '{self.path}'")
        return self.info

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes (all that is left when negative); b"" at the end of the range."""
        if size < 0:
            rest, self._pending = self._pending, memoryview(b"")
            return b"".join([rest, *self._chunks])
        if not self._pending:
            self._pending = next(self._chunks, memoryview(b""))
        piece = self._pending[:size]
        self._pending = self._pending[len(piece) :]
        return bytes(piece)

    def _receive(self) -> Iterator[memoryview]:
        """The range's bytes in the pieces they arrive in, across resumed streams."""
        while not self._done:
            if self._stream is None:
                self._stream = self._open()
            try:
                message = next(self._stream)
            except StopIteration:
                self._stream = None
                self._finish()
                return
            except grpc.RpcError as exc:
                self._stream = None
                if not retryable(exc) or self._tries >= self._settings.max_retries:
                    self._done = True
                    raise error(exc) from None
                backoff(self._tries, exc)  # then resume from the next byte not yet received
                self._tries += 1
                continue
            if message.HasField("info"):
                self._on_info(message.info)
            data = memoryview(message.data)
            if data:
                if self.info is None:
                    raise DataLoss(f"the server sent data for '{self.path}' before its info")
                if self._digest is not None:
                    self._digest.update(data)
                self._next += len(data)
                yield data

    def _open(self) -> Any:
        limit = 0 if self._end is None else self._end - self._next  # 0: to the end
        request = pb.DownloadArtifactRequest(
            path=str(self.path), offset=self._next, limit=limit, run_id=self._run_id
        )
        return self._stub.DownloadArtifact(request, timeout=self._settings.transfer_timeout)

    def _on_info(self, info: pb.FileInfo) -> None:
        if self.info is None:
            self.info = info
        elif _identity(info) != _identity(self.info):
            raise DataLoss(f"'{self.path}' changed on the server during the read; retry")

    def _finish(self) -> None:
        """The server ended the range: all of it must have arrived (and, for a whole file,
        match its sha256)."""
        self._done = True
        if self.info is None:
            raise DataLoss(f"the server sent nothing for '{self.path}'")
        size = self.info.file_size
        expected = size if self._end is None else min(self._end, size)
        if self._next != expected:
            raise DataLoss(
                f"'{self.path}': the server sent bytes up to {self._next}, not {expected}"
            )
        whole = self._digest is not None and self._next == size and self.info.sha256
        if whole and self._digest is not None and self._digest.hexdigest() != self.info.sha256:
            raise DataLoss(f"'{self.path}' does not match the server's sha256")


def _identity(info: pb.FileInfo) -> tuple[int, str, int]:
    return info.file_size, info.sha256, info.modified_time.ToNanoseconds()
