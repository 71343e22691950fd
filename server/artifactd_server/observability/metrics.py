"""The server's metrics, in a `CollectorRegistry` of its own (not prometheus_client's global one),
served over plain HTTP on a separate port."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

PREFIX = "artifactd"

# From a millisecond metadata lookup to a many-gigabyte transfer.
SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
)  # fmt: skip

_RPC = ("service", "method")


class Metrics:
    """Every metric the server exports; `registry` is what /metrics serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_started = Counter(
            f"{PREFIX}_grpc_server_started_total",
            "RPCs started, by method and type (unary, client_stream, server_stream, bidi_stream).",
            [*_RPC, "type"],
            registry=r,
        )
        self.rpc_handled = Counter(
            f"{PREFIX}_grpc_server_handled_total",
            "RPCs finished, by method and final gRPC status code.",
            [*_RPC, "code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            f"{PREFIX}_grpc_server_handling_seconds",
            "Time from the start of an RPC to its end (the final status), by method.",
            _RPC,
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.received_bytes = Counter(
            f"{PREFIX}_grpc_server_received_bytes_total",
            "Serialized size of the request messages received, by method.",
            _RPC,
            registry=r,
        )
        self.sent_bytes = Counter(
            f"{PREFIX}_grpc_server_sent_bytes_total",
            "Serialized size of the response messages sent, by method.",
            _RPC,
            registry=r,
        )
        self.active_streams = Gauge(
            f"{PREFIX}_grpc_server_active_streams",
            "Streaming RPCs (client, server or bidirectional) running now, by method.",
            _RPC,
            registry=r,
        )
        self.storage_seconds = Histogram(
            f"{PREFIX}_storage_operation_seconds",
            "Time spent in storage adapter operations (iterators: inside the iteration), by "
            "backend and operation.",
            ["backend", "operation"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            f"{PREFIX}_storage_operation_errors_total",
            "Storage adapter operations that raised, by backend, operation and error type.",
            ["backend", "operation", "error"],
            registry=r,
        )
        self.undecodable_requests = Counter(
            f"{PREFIX}_undecodable_requests_total",
            "Request messages refused with INVALID_ARGUMENT because their bytes are not a valid "
            "message of the method's request type (invalid UTF-8, garbage), by method.",
            _RPC,
            registry=r,
        )
        ProcessCollector(namespace=PREFIX, registry=r)
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Serves /metrics on `host:port` (0: any free port) in a thread; returns its port."""
        self._http, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
