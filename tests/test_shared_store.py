"""Replicas sharing one backend store and one destination: GC and the session sweeper everywhere.

Several `artifactd serve` replicas (and `artifactd gc` cron jobs) run garbage collection and the
expired-session sweep against the same PostgreSQL or MariaDB database and the same storage at
the same time. These tests run the real things as separate processes, each with its own engine
and connections, started together on a barrier: every deleted run is collected by exactly one
of them and live ones are untouched, every expired session is swept by exactly one (the counts
they report add up to the sessions that expired), a session in use is never swept however long
it has been open, and all of it finishes in bounded time (no deadlock, no lock wait timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from databases import fresh_database
from servers import ServerProcess, start_server

SHARED_BACKENDS = ("postgresql", "mariadb")
COLLECTORS = 4
ROUNDS = 8

_COLLECTOR = """
import json, os, sys, time
from google.protobuf.json_format import MessageToDict
from artifactd_server.domain.gc import local_collector

uri, root, go, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with local_collector(uri, [root]) as collector:
    print(json.dumps({"ready": True}), flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    for _ in range(rounds):
        for reply in collector.collect():
            print(json.dumps(MessageToDict(reply)), flush=True)
        print(json.dumps({"swept": collector.swept}), flush=True)
        time.sleep(0.25)
"""


@pytest.fixture(params=SHARED_BACKENDS)
def shared_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as uri:
        yield uri


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root`, hidden ones (kept resumable bytes, temporaries) included."""
    found = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


def _collect_concurrently(uri: str, root: Path, go: Path) -> tuple[list[str], float]:
    """Runs the collector processes, released together; their stdout, and the time taken."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _COLLECTOR, uri, str(root), str(go), str(ROUNDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(COLLECTORS)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, f"a collector exited before it was ready:\n{proc.communicate()[1]}"
        started = time.monotonic()
        go.touch()
        outputs = [proc.communicate(timeout=120) for proc in procs]
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    return [out for out, _err in outputs], elapsed


def _tally(outputs: list[str]) -> tuple[Counter[str], list[int]]:
    """(`kind:id` -> times reported collected, sessions swept per collector); fails on any
    failed item."""
    collected: Counter[str] = Counter()
    swept_per_collector = []
    for out in outputs:
        swept = 0
        for line in out.splitlines():
            reply = json.loads(line)
            item = reply.get("item")
            assert not item or item["outcome"] != "GARBAGE_OUTCOME_FAILED", item
            if item and item["outcome"] == "GARBAGE_OUTCOME_COLLECTED":
                collected[f"{item['kind']}:{item['id']}"] += 1
            swept += reply.get("swept", 0)
        swept_per_collector.append(swept)
    return collected, swept_per_collector


def test_concurrent_collectors_delete_each_run_and_session_exactly_once(
    shared_uri: str, tmp_path: Path
) -> None:
    """Four collector processes at once on one store: every run, experiment and expired session
    is collected by exactly one of them. Each attempt checks all of that; the sweeps must also
    have overlapped (two collectors swept sessions), or nothing concurrent was tested, and on a
    loaded machine one process can happen to take them all: up to three attempts for that."""
    swept: list[int] = []
    for attempt in range(3):
        swept = _collect_with_concurrent_collectors(
            shared_uri, tmp_path / f"try-{attempt}", attempt
        )
        if sum(1 for count in swept if count) >= 2:
            return
    pytest.fail(f"in 3 attempts the sweeps never overlapped: sessions swept per collector {swept}")


def _collect_with_concurrent_collectors(shared_uri: str, tmp_path: Path, attempt: int) -> list[int]:
    from artifactd_server.domain.multipart import Settings
    from artifactd_server.domain.resumable import ResumableUploads
    from artifactd_server.domain.roots import ArtifactRoots
    from artifactd_server.domain.scopes import Scopes
    from artifactd_server.storage.local import LocalStorage
    from artifactd_server.store.database import open_database
    from artifactd_server.store.schema import MULTIPART
    from artifactd_server.store.tracking import TrackingStore
    from artifactd_server.store.upload_sessions import UploadSessions

    root = tmp_path / "shared-root"
    database = open_database(shared_uri)
    storage = LocalStorage(root)
    store, roots = TrackingStore(database), ArtifactRoots([storage])
    scopes, sessions = Scopes(roots, store), UploadSessions(database)

    def resumable(ttl: float) -> ResumableUploads:
        return ResumableUploads(scopes, sessions, Settings(session_ttl=ttl))

    live_exp = store.create_experiment(f"live-{attempt}", None, storage.uri)
    doomed_exp = store.create_experiment(f"doomed-{attempt}", None, storage.uri)
    deleted_runs, live_runs = [], []
    for index in range(36):
        run = store.create_run(doomed_exp.experiment_id if index < 6 else live_exp.experiment_id)
        folder = root / run.experiment_id / run.run_id / "artifacts"
        (folder / "sub").mkdir(parents=True)
        for number in range(4):
            (folder / "sub" / f"{number}.bin").write_bytes(os.urandom(64))
        if index < 6 or index % 2:
            deleted_runs.append(run.run_id)
        else:
            live_runs.append(run.run_id)
    # Sessions of runs about to be collected: GC aborts them (not expired: no sweep takes them).
    run_sessions = [
        resumable(3600).start(
            run_id=run_id, path_text="big.bin", size=10, sha256="", overwrite=False, owner=""
        )
        for run_id in deleted_runs[6:12]
    ]
    for run_id in deleted_runs[6:]:
        store.delete_run(run_id)
    store.delete_experiment(doomed_exp.experiment_id)
    # Sessions nobody uses, expiring before and during the collectors' rounds.
    idle = [
        resumable(0.1 + 0.15 * (index % 10)).start(
            run_id=live_runs[index % len(live_runs)] if index % 3 else "",
            path_text=f"idle/{index}.bin", size=5, sha256="", overwrite=False, owner="",
        )
        for index in range(30)
    ]  # fmt: skip
    idle_multipart = [
        sessions.create(
            kind=MULTIPART, root_uri=storage.uri, path=f"mp/{index}",
            run_id="", owner="", backend_upload_id="x", size=1, part_size=1, sha256="",
            overwrite=False, ttl_ms=100 + 200 * index,
        )
        for index in range(6)
    ]  # fmt: skip
    # Sessions in use the whole time with a TTL far shorter than the run: never swept.
    active_uploads = resumable(1.0)
    active = [
        active_uploads.start(
            run_id=live_runs[0], path_text=f"active/{index}.bin", size=5, sha256="",
            overwrite=False, owner="",
        )
        for index in range(4)
    ]  # fmt: skip
    before = _files(root)
    live_files = {
        k: v
        for k, v in before.items()
        if any(f"/{run_id}/" in f"/{k}" for run_id in live_runs) and "/.artifactd-" not in f"/{k}"
    }

    stop_touching = threading.Event()
    touch_errors: list[BaseException] = []

    def keep_active() -> None:
        while not stop_touching.wait(0.1):
            for session in active:
                try:
                    active_uploads.status(session.upload_id, "")
                except BaseException as exc:  # reported by the test, not lost in the thread
                    touch_errors.append(exc)
                    return

    toucher = threading.Thread(target=keep_active, daemon=True)
    toucher.start()
    try:
        outputs, elapsed = _collect_concurrently(shared_uri, root, tmp_path / "go")
    finally:
        stop_touching.set()
        toucher.join(5)
    assert not touch_errors, f"an active session stopped being usable: {touch_errors[0]!r}"
    collected, swept_per_collector = _tally(outputs)
    # Bounded: a deadlock or a lock wait timeout would take far longer (MariaDB waits 50 s).
    assert elapsed < 60, f"the collectors took {elapsed:.1f}s"
    runs = {k: n for k, n in collected.items() if k.startswith("GARBAGE_KIND_RUN:")}
    assert sorted(runs) == sorted(f"GARBAGE_KIND_RUN:{r}" for r in deleted_runs)
    assert set(runs.values()) == {1}, "a run was collected twice"
    assert collected[f"GARBAGE_KIND_EXPERIMENT:{doomed_exp.experiment_id}"] == 1
    expected_swept = len(idle) + len(idle_multipart)
    assert sum(swept_per_collector) == expected_swept, (
        f"sessions swept per collector {swept_per_collector} do not add up to {expected_swept}"
    )

    left = sessions.expired(limit=1000)
    assert left == [], "expired sessions were left behind"
    for session in run_sessions:
        with pytest.raises(Exception, match="no open multipart upload"):
            sessions.get(session.upload_id, "")
    for session in active:  # still open and writable
        assert active_uploads.status(session.upload_id, "") == (0, 5)
    after = _files(root)
    assert {k: v for k, v in after.items() if k in live_files} == live_files
    kept = sorted(k for k in after if k not in live_files)
    assert len(kept) == len(active), f"only the active sessions' kept bytes may remain: {kept}"
    assert all("/active/" in f"/{k}" for k in kept), kept
    for run_id in deleted_runs:
        assert not any(f"/{run_id}/" in f"/{k}" for k in after), f"run {run_id} left files"
    for session in active:  # the next attempt's sweeps count only its own sessions
        sessions.close(session.upload_id)
    database.close()
    return swept_per_collector


def _stream_slowly(
    stub: pb_grpc.ArtifactServiceStub, upload_id: str, data: bytes, seconds: float
) -> pb.LogArtifactResponse:
    """Continues a resumable upload in one stream that takes `seconds`, sending as it goes."""
    pieces = 20

    def messages() -> Iterator[pb.LogArtifactRequest]:
        yield pb.LogArtifactRequest(header=pb.UploadHeader(upload_id=upload_id, offset=0))
        step = -(-len(data) // pieces)
        for position in range(0, len(data), step):
            time.sleep(seconds / pieces)
            yield pb.LogArtifactRequest(data=data[position : position + step])
        yield pb.LogArtifactRequest(finish=pb.UploadFinish())

    return stub.LogArtifact(messages(), timeout=60)


def _start(stub: pb_grpc.ArtifactServiceStub, path: str, data: bytes) -> str:
    reply = stub.StartResumableUpload(
        pb.StartResumableUploadRequest(
            path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        ),
        timeout=30,
    )
    assert reply.supported
    return str(reply.upload_id)


def test_replicas_sweep_idle_sessions_but_never_one_in_use(shared_uri: str, tmp_path: Path) -> None:
    """Three `artifactd serve` replicas with a 1 s session TTL, each sweeping every 0.5 s: a
    stream that takes 4 s (started on one replica, streamed through another) publishes intact,
    a session polled with QueryWriteStatus stays open, and an idle one is swept."""
    root = tmp_path / "root"
    args = ("--backend-store-uri", shared_uri, "--multipart-session-ttl", "1", "--no-fsync")
    replicas: list[ServerProcess] = []
    try:
        for index in range(3):
            replicas.append(start_server(root, tmp_path / f"replica-{index}", *args, timeout=60))
        channels = [grpc.insecure_channel(r.target) for r in replicas]
        stubs = [pb_grpc.ArtifactServiceStub(c) for c in channels]
        data = os.urandom(3 * 1024 * 1024 + 17)
        streamed = _start(stubs[0], "slow/stream.bin", data)
        polled = _start(stubs[1], "slow/polled.bin", b"12345")
        idle = _start(stubs[2], "slow/idle.bin", b"12345")

        poll_errors: list[BaseException] = []

        def poll() -> None:
            try:
                for number in range(16):
                    reply = stubs[number % 3].QueryWriteStatus(
                        pb.QueryWriteStatusRequest(upload_id=polled), timeout=10
                    )
                    assert reply.committed_size == 0
                    time.sleep(0.25)
            except BaseException as exc:  # reported by the test, not lost in the thread
                poll_errors.append(exc)

        poller = threading.Thread(target=poll)
        poller.start()
        reply = _stream_slowly(stubs[1], streamed, data, seconds=4.0)
        poller.join(30)
        assert not poll_errors, f"a polled session was swept: {poll_errors[0]!r}"
        assert reply.file.file_size == len(data)
        assert reply.file.sha256 == hashlib.sha256(data).hexdigest()
        assert (root / "slow" / "stream.bin").read_bytes() == data
        stubs[2].QueryWriteStatus(pb.QueryWriteStatusRequest(upload_id=polled), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            stubs[0].QueryWriteStatus(pb.QueryWriteStatusRequest(upload_id=idle), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        hidden = [name for name in os.listdir(root / "slow") if name.startswith(".")]
        assert len(hidden) == 1, f"the idle session's kept bytes must be gone: {hidden}"
        for channel in channels:
            channel.close()
    finally:
        for replica in replicas:
            replica.stop()
    for replica in replicas:
        assert "Traceback" not in replica.log_text(), replica.log_text()
