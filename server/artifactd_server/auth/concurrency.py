"""Calls in progress per principal: one caller may not hold every worker thread.

The server runs each call on one of `--max-workers` threads; a single principal (a runaway
training job, a leaked token) opening that many slow uploads would leave none for anyone else.
With `--max-calls-per-principal` each authenticated principal may have at most that many calls
in progress in this process; the next one is RESOURCE_EXHAUSTED at once, naming the limit. A
slot is released when the call ends however it ends: returned, failed, cancelled by the client,
or past its deadline (gRPC's termination callback, besides the wrapper's own `finally`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from artifactd.protocol.errors import ResourceExhausted


class PrincipalSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, principal: str) -> Callable[[], None]:
        """Takes a slot for `principal`; returns its release, which may be called any number of
        times (only the first counts). `ResourceExhausted` when all of them are taken."""
        with self._lock:
            held = self._held.get(principal, 0)
            if held >= self.limit:
                raise ResourceExhausted(
                    f"{principal or 'this caller'} already has {held} calls in progress, the "
                    f"most one principal may have at once on this server "
                    f"(--max-calls-per-principal {self.limit}); retry when one has ended"
                )
            self._held[principal] = held + 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                left = self._held[principal] - 1
                if left:
                    self._held[principal] = left
                else:
                    del self._held[principal]

        return release

    def in_progress(self, principal: str) -> int:
        with self._lock:
            return self._held.get(principal, 0)
