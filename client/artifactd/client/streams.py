"""`ChunkQueue`: bytes handed from one thread to an upload reading them in another.

`ArtifactClient.log_stream` reads its source with `read(size)` on gRPC's sending thread, while
the bytes are produced elsewhere: an MLflow tracking server's event loop receiving a request
body, an fsspec file being written. The queue is bounded, so a fast producer waits for the upload
instead of filling memory, and either side can end it: the producer finishes or fails it (a
failed queue makes the upload store nothing), the upload abandons it when it ended early.
"""

from __future__ import annotations

import queue
import threading


class ChunkQueue:
    """A file-like `read` over chunks put by another thread, at most `size` chunks waiting."""

    _END = b""

    def __init__(self, size: int) -> None:
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(size)
        self._pending = memoryview(b"")
        self._abandoned = threading.Event()

    def put(self, chunk: bytes) -> bool:
        """Queues a chunk; False once the reader is gone (the upload ended)."""
        if not chunk:
            return not self._abandoned.is_set()
        return self._put(chunk)

    def finish(self) -> None:
        """The end of the bytes: the upload publishes what it read."""
        self._put(self._END)

    def fail(self, exc: BaseException) -> None:
        """The reader's next `read` raises: the upload stores nothing."""
        self._put(exc)

    def abandon(self) -> None:
        """The reader is gone: a producer waiting on a full queue stops waiting."""
        self._abandoned.set()

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._abandoned.is_set():
            try:
                self._chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            item = self._chunks.get()
            if isinstance(item, BaseException):
                raise OSError(f"the bytes being uploaded broke off: {item!r}") from item
            if not item:  # the end of the bytes
                return b""
            self._pending = memoryview(item)
        taken = self._pending if size < 0 else self._pending[:size]
        self._pending = self._pending[len(taken) :]
        return bytes(taken)
