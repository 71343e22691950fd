"""Open direct (multipart) and resumable upload sessions, counted in the backend store when
Prometheus scrapes: one grouped COUNT per scrape, nothing on the upload path. The store is shared
by replicas, so every replica reports the same, store-wide numbers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from artifactd_server.observability.metrics import PREFIX
from artifactd_server.store.database import Database
from artifactd_server.store.schema import MULTIPART, RESUMABLE, STREAMED, MultipartUploadRow

log = logging.getLogger(__name__)

NAME = f"{PREFIX}_upload_sessions_open"
HELP = (
    "Open upload sessions in the backend store (not yet completed, aborted or swept), by kind: "
    "multipart (presigned, straight to storage), resumable (through the server), or streamed "
    "(a LogArtifact(s) stream's multipart upload in storage, recorded for the sweeper)."
)


class UploadSessionsCollector(Collector):
    def __init__(self, database: Database) -> None:
        self._database = database

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(NAME, HELP, labels=["kind"])

    def collect(self) -> Iterator[Metric]:
        try:
            with self._database.transaction() as session:
                rows = session.execute(
                    select(MultipartUploadRow.kind, func.count()).group_by(MultipartUploadRow.kind)
                ).all()
        except Exception as exc:  # a scrape must not fail because the store is away
            log.warning("counting upload sessions for the metrics failed: %s", exc)
            return
        counts = {str(kind): int(count) for kind, count in rows}
        family = GaugeMetricFamily(NAME, HELP, labels=["kind"])
        for kind in sorted({MULTIPART, RESUMABLE, STREAMED, *counts}):
            family.add_metric([kind], counts.get(kind, 0))
        yield family
