"""A consumer thread for the bytes of one large transfer, on either side of the wire.

Hashing and writing release the GIL; done on the thread that receives the messages they cost as
much CPU as receiving itself. A second thread does them while the next messages arrive. The
queue is bounded, so memory stays bounded; a failure on the consumer thread (a full disk) is
raised on the producer's thread at its next `put` or at `finish`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

DEFAULT_DEPTH = 16  # chunks in flight: 4 MiB at 256 KiB


class BackgroundConsumer:
    def __init__(
        self, consume: Callable[[bytes | memoryview], None], name: str, depth: int = DEFAULT_DEPTH
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
