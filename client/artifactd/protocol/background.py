"""A writer thread for the bytes of one large transfer, on either side of the wire.

Writing new file pages is a transfer's largest cost: 1.5-2.5 CPU-s per GiB on a VM whose host
takes back freed memory, where receiving costs 0.2 and sha256 0.6. Writing and hashing release
the GIL, so the receiving thread hashes each chunk and hands it to a second thread that only
writes: the two run side by side, and the slower of them (the writer) sets the pace alone. With
both on the writing thread a 1 GiB download took 2.7-3.2 s here; split, 1.75-1.9 s. The queue is
bounded, so memory stays bounded; a failure on the writer thread (a full disk) is raised on the
producer's thread at its next `put` or at `finish`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

DEFAULT_DEPTH = 16  # chunks in flight: 16 MiB at 1 MiB (64 measured no faster at 256 KiB)

BACKGROUND_WRITE_THRESHOLD = 8 * 1024 * 1024
"""Files at least this large get a writer thread; smaller ones are written on the receiving
thread, where a thread per file would cost more than it saves."""


class BackgroundConsumer:
    def __init__(
        self, consume: Callable[[bytes | memoryview], object], name: str, depth: int = DEFAULT_DEPTH
    ) -> None:
        self._consume = consume
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(depth)
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._drain, name=name, daemon=True
        )
        self._thread.start()

    def put(self, data: bytes | memoryview) -> None:
        if self._failure is not None:
            raise self._failure
        self._queue.put(data)

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._failure is None:
                try:
                    self._consume(data)
                except BaseException as exc:  # re-raised on the producer's thread
                    self._failure = exc

    def finish(self) -> None:
        """Waits until everything put was consumed; raises the consumer's failure, if any."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
