"""The server's metrics, in a `CollectorRegistry` of its own (not prometheus_client's global one),
served over plain HTTP on a separate port.

With `--workers N` the numbers add up across the processes: the supervisor points
`PROMETHEUS_MULTIPROC_DIR` at an empty directory before it starts the workers, so every
worker's metrics live in memory-mapped files there (prometheus_client's multiprocess mode), and
the supervisor alone serves the one scrape port from a registry that merges those files
(`MergedMetrics`): counters and histograms are summed, the active-streams gauge is the sum over
live workers. Process metrics (CPU, memory) are left out there: they describe one process and
do not add up.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
            multiprocess_mode="livesum",  # with --workers: the sum over the live workers
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
        self._http, self._thread = _serve(self.registry, host, port)
        return int(self._http.server_port)

    def close(self) -> None:
        _close(self._http)
        self._http = None


class MergedMetrics:
    """The one scrape endpoint of `--workers N`: every worker's metrics, merged from the
    multiprocess directory, plus the collectors given (store-wide gauges, the replica)."""

    def __init__(self, directory: str, collectors: tuple[Collector, ...] = ()) -> None:
        self.directory = directory
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=directory)  # type: ignore[no-untyped-call]
        for collector in collectors:
            self.registry.register(collector)
        self._http: WSGIServer | None = None

    def serve(self, host: str, port: int) -> int:
        self._http, _thread = _serve(self.registry, host, port)
        return int(self._http.server_port)

    def process_gone(self, pid: int) -> None:
        """Drops an exited worker's live gauges (its counters stay in the sums)."""
        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        _close(self._http)
        self._http = None


def fresh_multiprocess_dir(directory: str) -> None:
    """Empties `directory` of metric files (creating it if needed): files of an earlier run
    would be merged in and make every counter start from its old total."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


class ReplicaCollector(Collector):
    """`artifactd_replica_info{replica="..."} 1`: which replica a scrape came from.

    An info metric rather than a `replica` label on every series, as Prometheus's own guidance
    has it (identity is a target label, joined where wanted with `* on(instance)
    group_left(replica) artifactd_replica_info`): a label on every series would clash with
    the labels service discovery attaches and multiply what every query has to carry. Served
    by every process that serves /metrics, in both modes.
    """

    def __init__(self, replica: str) -> None:
        self._replica = replica

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_replica_info",
            "The replica serving these metrics (--replica-name; the host name by default).",
            labels=["replica"],
        )
        family.add_metric([self._replica], 1)
        yield family


def _serve(
    registry: CollectorRegistry, host: str, port: int
) -> tuple[WSGIServer, threading.Thread]:
    return start_http_server(port, host, registry=registry)


def _close(http: WSGIServer | None) -> None:
    if http is not None:
        http.shutdown()
        http.server_close()
