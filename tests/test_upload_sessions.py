"""Upload sessions in the backend store, on SQLite, PostgreSQL and MariaDB: who may use a
session, and which ones the sweeper sees as expired."""

from __future__ import annotations

import time

import pytest

from artifactd.protocol.errors import NotFound
from artifactd_server.store.schema import MULTIPART, RESUMABLE
from artifactd_server.store.tracking import TrackingStore
from artifactd_server.store.upload_sessions import UploadSession, UploadSessions


def open_one(sessions: UploadSessions, owner: str, *, ttl_ms: int = 60_000, run_id: str = "",
             kind: str = MULTIPART) -> UploadSession:  # fmt: skip
    return sessions.create(
        kind=kind, root_uri="file:///srv/artifacts", path="Models/W.bin", run_id=run_id,
        owner=owner, backend_upload_id="backend-id", size=10 * 1024**3, part_size=64 * 1024**2,
        sha256="ab" * 32, overwrite=False, ttl_ms=ttl_ms,
    )  # fmt: skip


def test_only_the_owner_sees_a_session(tracking_store: TrackingStore) -> None:
    sessions = UploadSessions(tracking_store.database)
    alice = open_one(sessions, "alice")
    assert len(alice.upload_id) == 32 and alice.part_count == 160
    assert sessions.get(alice.upload_id, "alice") == alice
    for stranger in ("bob", "", "Alice", "alice "):  # exact, case-sensitive match on every DB
        with pytest.raises(NotFound) as info:
            sessions.get(alice.upload_id, stranger)
        assert "not yours" in info.value.message  # the same answer as for an unknown id
    with pytest.raises(NotFound):
        sessions.get("0" * 32, "alice")
    assert sessions.close(alice.upload_id) and not sessions.close(alice.upload_id)
    with pytest.raises(NotFound):
        sessions.get(alice.upload_id, "alice")


def test_expired_sessions_are_unusable_and_swept_first(tracking_store: TrackingStore) -> None:
    sessions = UploadSessions(tracking_store.database)
    run_id = "e" * 32
    old = open_one(sessions, "carol", ttl_ms=1, run_id=run_id, kind=RESUMABLE)
    fresh = open_one(sessions, "carol", run_id=run_id)
    time.sleep(0.05)
    with pytest.raises(NotFound):
        sessions.get(old.upload_id, "carol")
    expired = [s.upload_id for s in sessions.expired(limit=1000)]
    assert old.upload_id in expired and fresh.upload_id not in expired
    assert {s.upload_id for s in sessions.of_run(run_id)} == {old.upload_id, fresh.upload_id}
    assert {s.kind for s in sessions.of_run(run_id)} == {MULTIPART, RESUMABLE}
    for session in (old, fresh):
        sessions.close(session.upload_id)
