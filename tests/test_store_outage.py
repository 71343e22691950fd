"""The backend store goes away under load and comes back: fast UNAVAILABLE, no restart, no loss.

A private PostgreSQL or MariaDB (tests/private_databases.py; the machine's shared servers are
never touched) is killed (SIGKILL, as in a crash) or shut down (fast shutdown, as in a restart
for an upgrade) while clients create runs and upload artifacts into them, then started again on
the same data directory. Calls that need the store must fail with UNAVAILABLE within
`--backend-store-timeout` plus a margin, with a message a user can act on; calls that don't need
it (uploads to plain paths) keep working; the server never exits and serves store calls again
once the database is back, without a restart; every run and artifact acknowledged before, during
or after the outage is there, whole.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc
from artifactd_server.store.database import Database, normalize_uri

from private_databases import PrivateDatabase, PrivateMariaDB, PrivatePostgres
from servers import start_server

STORE_TIMEOUT_S = 3
FAIL_FAST_S = STORE_TIMEOUT_S + 2.0
"""The slowest acceptable answer while the database is down."""
RECOVERY_S = 15.0
"""How soon after the database answers again a store call must succeed."""
WRITERS = 4


def upload(path: str, data: bytes, run_id: str = "") -> Iterator[pb.LogArtifactRequest]:
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path, run_id=run_id))
    yield pb.LogArtifactRequest(data=data)
    yield pb.LogArtifactRequest(finish=pb.UploadFinish())


@dataclass
class Outcomes:
    """What the load saw: acknowledged artifacts, and every failure with its timing."""

    stored: list[tuple[str, str, str]] = field(default_factory=list)  # run_id, path, sha256
    loose: list[tuple[str, str]] = field(default_factory=list)  # plain path, sha256
    loose_during_outage: int = 0
    failures: list[tuple[str, grpc.StatusCode, str, float, float]] = field(default_factory=list)
    """(what, code, message, started at, seconds taken)"""
    successes_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """Writers that each create a run and upload into it, in a loop, until stopped."""

    def __init__(self, channel: grpc.Channel, experiment_id: str) -> None:
        self.runs = rpb_grpc.RunServiceStub(channel)
        self.artifacts = pb_grpc.ArtifactServiceStub(channel)
        self.experiment_id = experiment_id
        self.seen = Outcomes()
        self.outage = threading.Event()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._writer, args=(i,), daemon=True) for i in range(WRITERS)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive(), "a writer hung"

    def _timed(self, what: str, call: Callable[[], object]) -> bool:
        started = time.monotonic()
        try:
            call()
        except grpc.RpcError as exc:
            with self.seen.lock:
                self.seen.failures.append(
                    (what, exc.code(), exc.details() or "", started, time.monotonic() - started)
                )
            time.sleep(0.1)
            return False
        with self.seen.lock:
            self.seen.successes_at.append(time.monotonic())
        return True

    def _writer(self, index: int) -> None:
        while not self.stopping.is_set():
            run_id = ""

            def create_run() -> None:
                nonlocal run_id
                run_id = self.runs.CreateRun(
                    rpb.CreateRunRequest(experiment_id=self.experiment_id), timeout=60
                ).run.run_id

            if self._timed("CreateRun", create_run):
                data = os.urandom(64 * 1024)
                if self._timed(
                    "LogArtifact(run)",
                    functools.partial(
                        self.artifacts.LogArtifact, upload("model.bin", data, run_id), timeout=60
                    ),
                ):
                    with self.seen.lock:
                        self.seen.stored.append((run_id, "model.bin", _sha(data)))
            loose = os.urandom(4096)
            path = f"loose/{index}/{uuid.uuid4().hex}.bin"
            during = self.outage.is_set()
            if self._timed(
                "LogArtifact(path)",
                functools.partial(self.artifacts.LogArtifact, upload(path, loose), timeout=60),
            ):
                with self.seen.lock:
                    self.seen.loose.append((path, _sha(loose)))
                    self.seen.loose_during_outage += during


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(stub: pb_grpc.ArtifactServiceStub, **where: str) -> bytes:
    chunks = stub.DownloadArtifact(pb.DownloadArtifactRequest(**where), timeout=30)
    return b"".join(chunk.data for chunk in chunks)


@pytest.fixture(params=["postgresql", "mariadb"])
def database(request: pytest.FixtureRequest) -> Iterator[PrivateDatabase]:
    db: PrivateDatabase = PrivatePostgres() if request.param == "postgresql" else PrivateMariaDB()
    try:
        db.start()
        yield db
    finally:
        db.destroy()


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_the_backend_store_goes_away_under_load_and_comes_back(
    database: PrivateDatabase, how: str, tmp_path: Path
) -> None:
    server = start_server(
        tmp_path / "store", tmp_path / "run", "--backend-store-uri", database.uri,
        "--backend-store-timeout", str(STORE_TIMEOUT_S),
    )  # fmt: skip
    pid = server.process.pid
    try:
        with grpc.insecure_channel(server.target) as channel:
            runs = rpb_grpc.RunServiceStub(channel)
            artifacts = pb_grpc.ArtifactServiceStub(channel)
            experiment_id = runs.CreateExperiment(
                rpb.CreateExperimentRequest(name="outage")
            ).experiment.experiment_id
            with Load(channel, experiment_id) as load:
                time.sleep(1.5)
                load.outage.set()
                down_at = time.monotonic()
                database.kill() if how == "kill" else database.stop()
                time.sleep(4 * STORE_TIMEOUT_S / 3 + 1)
                database.start()
                back_at = time.monotonic()
                load.outage.clear()
                deadline = back_at + RECOVERY_S
                while time.monotonic() < deadline:
                    with load.seen.lock:
                        recovered = [t for t in load.seen.successes_at if t > back_at]
                    if len(recovered) >= 2 * WRITERS:
                        break
                    time.sleep(0.2)
                time.sleep(1.0)
            seen = load.seen

            # during the outage: only UNAVAILABLE, fast, with a message saying what and what next
            outage = [f for f in seen.failures if f[3] >= down_at - 0.1]
            assert outage, "the database outage never reached a client"
            wrong = [f for f in seen.failures if f[1] != grpc.StatusCode.UNAVAILABLE]
            assert not wrong, f"failures other than UNAVAILABLE: {wrong[:5]}"
            slow = [f for f in seen.failures if f[4] > FAIL_FAST_S]
            assert not slow, f"answers slower than {FAIL_FAST_S} s: {slow[:5]}"
            for what, _, message, _, _ in seen.failures:
                assert what != "LogArtifact(path)", "an upload that needs no store failed"
                assert "backend store" in message and "Retry later" in message, message
            assert seen.loose_during_outage > 0, "plain-path uploads stopped with the database"

            # back: store calls succeed again on the same process
            recovered = sorted(t for t in seen.successes_at if t > back_at)
            assert len(recovered) >= 2 * WRITERS, "store calls did not resume after the outage"
            assert server.process.poll() is None and server.process.pid == pid

            # nothing lost: every acknowledged run and artifact is there, whole
            for run_id, path, digest in seen.stored:
                runs.GetRun(rpb.GetRunRequest(run_id=run_id), timeout=10)
                assert _sha(_download(artifacts, run_id=run_id, path=path)) == digest
            for path, digest in seen.loose:
                assert _sha(_download(artifacts, path=path)) == digest
            listed: list[rpb.Run] = []
            token = ""
            while True:
                page = runs.ListRuns(
                    rpb.ListRunsRequest(experiment_ids=[experiment_id], page_token=token),
                    timeout=10,
                )
                listed += page.runs
                if not (token := page.next_page_token):
                    break
            acknowledged = {run_id for run_id, _, _ in seen.stored}
            assert acknowledged <= {r.run_id for r in listed}
            # no run is half-written: each has its row, experiment and artifact location
            for run in listed:
                assert run.experiment_id == experiment_id and run.artifact_uri, run
            assert _run_rows(database) == len(listed), "rows the API cannot see"
        print(
            f"\n{database.kind} {how}: {len(seen.stored)} runs with artifacts acknowledged, "
            f"{len(seen.loose)} plain-path uploads ({seen.loose_during_outage} during the "
            f"outage), {len(outage)} UNAVAILABLE in "
            f"{min(f[4] for f in outage):.2f}-{max(f[4] for f in outage):.2f} s, first success "
            f"{recovered[0] - back_at:.2f} s after the database answered"
        )
        assert "Traceback" not in server.log_text()
    finally:
        assert server.stop() == 0, server.log_text()


def _run_rows(database: PrivateDatabase) -> int:
    """Runs in the database, counted straight from its table (not through artifactd)."""
    engine = create_engine(normalize_uri(database.uri), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT COUNT(*) FROM artifactd_runs")).scalar_one())
    finally:
        engine.dispose()


def test_a_connection_the_database_dropped_is_logged_in_one_line(
    database: PrivateDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection checked out when the database stops cannot be reset as it goes back to the
    pool; SQLAlchemy logs that as an ERROR with the driver's traceback, once per connection,
    in an outage the calls already report. The server's log gets one warning line instead."""
    store = Database(database.uri, timeout=STORE_TIMEOUT_S)
    try:
        pooled = store.engine.pool.connect()  # as a Session holds it
        cursor = pooled.cursor()
        cursor.execute("SELECT 1")  # the driver begins a transaction the pool must roll back
        cursor.close()
        database.stop()
        with caplog.at_level(logging.WARNING, logger="sqlalchemy.pool"):
            pooled.close()  # back to the pool, which resets it
        pool_records = [r for r in caplog.records if r.name.startswith("sqlalchemy.pool")]
        assert pool_records, "the pool did not report the connection it could not reset"
        for record in pool_records:
            assert record.exc_info is None and record.levelno == logging.WARNING, record
            assert "a backend store connection was lost" in record.getMessage()
    finally:
        store.engine.dispose()
