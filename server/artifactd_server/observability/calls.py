"""One RPC's record — bytes, path, principal, request id — and its accounting when it ends.

The principal is what the authentication layer inside noted (`identity.taking_notes`): it
resets `identity.current()` when it returns, before this outer layer could read it.

A call ends exactly once, whichever comes first: the handler returns or raises (abort included),
its response stream is exhausted or dropped, or gRPC reports the call terminated (client
cancellation, deadline expiry) through `add_callback`.

Because this is the one place that sees every stream start and end exactly once, it also tells
the process heap (`artifactd.protocol.malloc.idle_trim`) when streams start and end, so the heap
can be trimmed once the server is idle.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import grpc
from prometheus_client import Counter, Gauge, Histogram

from artifactd.protocol.malloc import idle_trim
from artifactd_server.domain import identity
from artifactd_server.observability.metrics import Metrics

access_log = logging.getLogger("artifactd.access")


@dataclass(frozen=True)
class MethodMetrics:
    """The label children of one method, resolved once (labels() takes a lock each time)."""

    service: str
    name: str
    streaming: bool
    started: Counter
    handled: dict[grpc.StatusCode, Counter]
    seconds: Histogram
    received: Counter
    sent: Counter
    active: Gauge
    metrics: Metrics

    @classmethod
    def of(cls, metrics: Metrics, full_method: str, kind: str) -> MethodMetrics:
        service, _, name = full_method.lstrip("/").rpartition("/")
        labels = (service, name)
        return cls(
            service=service,
            name=name,
            streaming=kind != "unary",
            started=metrics.rpc_started.labels(*labels, kind),
            handled={},
            seconds=metrics.rpc_seconds.labels(*labels),
            received=metrics.received_bytes.labels(*labels),
            sent=metrics.sent_bytes.labels(*labels),
            active=metrics.active_streams.labels(*labels),
            metrics=metrics,
        )

    def handled_counter(self, code: grpc.StatusCode) -> Counter:
        counter = self.handled.get(code)
        if counter is None:
            counter = self.metrics.rpc_handled.labels(self.service, self.name, code.name)
            self.handled[code] = counter
        return counter


class Call:
    __slots__ = (
        "_done",
        "_lock",
        "_start",
        "bytes_in",
        "bytes_out",
        "context",
        "full_method",
        "method",
        "notes",
        "path",
        "request_id",
    )

    def __init__(
        self,
        method: MethodMetrics,
        full_method: str,
        request_id: str,
        context: grpc.ServicerContext,
    ) -> None:
        self.method = method
        self.full_method = full_method
        self.request_id = request_id
        self.context = context
        self.bytes_in = 0
        self.bytes_out = 0
        self.path = ""
        self.notes = identity.CallNotes()  # the auth layer inside records the principal
        self._done = False
        self._lock = threading.Lock()
        self._start = time.perf_counter()
        if method.streaming:
            method.active.inc()
            idle_trim.started()

    def taking_notes(self) -> AbstractContextManager[identity.CallNotes]:
        """While inner layers run: what they learn about the call (the principal) is kept."""
        return identity.taking_notes(self.notes)

    @property
    def principal(self) -> str:
        noted = self.notes.principal
        return noted.name if noted is not None else ""

    def finish(self, code: grpc.StatusCode) -> None:
        """Accounts for the call once; later calls (the termination callback) do nothing."""
        with self._lock:
            if self._done:
                return
            self._done = True
        seconds = time.perf_counter() - self._start
        method = self.method
        method.handled_counter(code).inc()
        method.seconds.observe(seconds)
        if self.bytes_in:
            method.received.inc(self.bytes_in)
        if self.bytes_out:
            method.sent.inc(self.bytes_out)
        if method.streaming:
            method.active.dec()
            idle_trim.ended(self.bytes_in + self.bytes_out)
        _log(self, code, seconds)

    @property
    def finished(self) -> bool:
        return self._done


def _log(call: Call, code: grpc.StatusCode, seconds: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    try:
        peer = call.context.peer()
    except Exception:  # the call is gone: no peer to report
        peer = ""
    fields = {
        "request_id": call.request_id,
        "principal": call.principal,
        "method": call.full_method,
        "path": call.path,
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
        "duration_ms": round(seconds * 1000, 3),
        "code": code.name,
        "peer": peer,
    }
    access_log.info(
        "%s %s %.1fms in=%d out=%d path=%r principal=%r request_id=%s",
        call.full_method, code.name, seconds * 1000, call.bytes_in, call.bytes_out,
        call.path, call.principal, call.request_id,
        extra={"fields": fields},
    )  # fmt: skip


def outcome(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the call ends with, as gRPC will send it."""
    if not context.is_active():  # the client cancelled or the deadline passed
        return gone(context)
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]  # abort/set_code
    if error is None:
        return code if code is not None else grpc.StatusCode.OK
    if code is not None:
        return code
    if isinstance(error, grpc.RpcError):  # raised by the request stream of a call that ended
        return gone(context)
    return grpc.StatusCode.UNKNOWN  # what gRPC sends for an exception


DEADLINE_SKEW_S = 0.5
"""How much of its deadline the server may still see left when the client's has run out. The
client's clock starts when it sends the call, the server's when it receives it; the client
cancels the call the moment its own runs out, so the server sees a cancel up to the network and
scheduling delay before its deadline (tens of ms, hundreds on a loaded machine)."""


def gone(context: grpc.ServicerContext) -> grpc.StatusCode:
    """Why a call ended without its handler finishing: the deadline, or the client."""
    try:
        remaining = context.time_remaining()
    except Exception:
        remaining = None
    if remaining is not None and remaining <= DEADLINE_SKEW_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
