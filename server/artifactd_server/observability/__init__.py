"""Observability: Prometheus metrics on their own HTTP port, and one access-log line per RPC.

metrics.py      the metric objects, in a registry the server owns, and the /metrics endpoint
interceptor.py  the outermost gRPC interceptor: counts, times and logs every call
calls.py        one call's record (bytes, status, principal) and its final accounting
requests.py     what the access log takes from a request: request id and path, nothing else
storage.py      times every storage adapter verb and counts its errors, for any backend
sessions.py     open direct and resumable upload sessions, counted at scrape time
logs.py         text or JSON log lines for every server log record
"""

from artifactd_server.observability.interceptor import ObservingInterceptor
from artifactd_server.observability.logs import configure_logging
from artifactd_server.observability.metrics import (
    MergedMetrics,
    Metrics,
    ReplicaCollector,
    fresh_multiprocess_dir,
)
from artifactd_server.observability.sessions import UploadSessionsCollector
from artifactd_server.observability.storage import meter_storage

__all__ = [
    "MergedMetrics",
    "Metrics",
    "ObservingInterceptor",
    "ReplicaCollector",
    "UploadSessionsCollector",
    "configure_logging",
    "fresh_multiprocess_dir",
    "meter_storage",
]
