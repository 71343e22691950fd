"""What a stream's S3 multipart upload would leave if its server died, recorded in the backend
store (`domain.streamed`): in one process, on a real S3 server (moto) and each store database.

test_replicas.py kills a real replica mid-stream; this drives the same code step by step, where
each moment can be checked: a file over one part is recorded once its multipart upload exists,
the record goes when the file is published or aborted, one left behind (its server "died":
neither happened) is aborted in storage by a sweep once its TTL has passed, one still receiving
bytes is touched and outlives several TTLs and sweeps, and one swept while idle fails its stream
instead of publishing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from artifactd.protocol.errors import Aborted
from artifactd.protocol.paths import parse
from artifactd_server.domain.multipart import SETTLE_STARTING_AFTER, DirectUploads, Settings
from artifactd_server.domain.roots import ArtifactRoots
from artifactd_server.domain.scopes import Scopes
from artifactd_server.domain.streamed import StreamedUploads
from artifactd_server.domain.uploads import Declared, IncomingFile, UploadSpec
from artifactd_server.storage.base import STARTING
from artifactd_server.storage.gcs import UPLOAD_PREFIX, GCSStorage
from artifactd_server.storage.s3 import PART_SIZE, S3Storage
from artifactd_server.store.schema import MULTIPART, STREAMED, MultipartUploadRow
from artifactd_server.store.tracking import TrackingStore
from artifactd_server.store.upload_sessions import UploadSessions
from waiting import wait_for

from backend_servers import BUCKET, S3Service, gcs_server_env

TTL = 1.0
MiB = 1024 * 1024


@dataclass
class Setup:
    storage: Any  # S3Storage, or GCSStorage
    sessions: UploadSessions
    scopes: Scopes
    direct: DirectUploads
    streamed: StreamedUploads
    prefix: str

    def incoming(self, name: str, size: int | None = None) -> IncomingFile:
        """A file arriving as through LogArtifact, with its record keeper (owner "alice")."""
        path = parse(name)
        spec = UploadSpec(path, size, None, True, self.scopes.for_write("", path))
        return IncomingFile(
            dataclasses.replace(spec, tracking=self.streamed.tracking(spec, "alice"))
        )

    def records(self, name: str) -> list[str]:
        """The backend upload ids recorded for streams to `name`."""
        with self.sessions.database.transaction() as session:
            rows = session.scalars(
                select(MultipartUploadRow).where(
                    MultipartUploadRow.kind == STREAMED,
                    MultipartUploadRow.root_uri == self.storage.uri,
                    MultipartUploadRow.path == name,
                )
            )
            return [row.backend_upload_id for row in rows]

    def in_storage(self, name: str) -> list[str]:
        """The multipart uploads S3 holds for `name`."""
        key = f"{self.prefix}/{name}"
        client: Any = self.storage.client
        uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])
        return [u["UploadId"] for u in uploads if u["Key"] == key]


@pytest.fixture
def setup(
    moto_s3: S3Service,
    tracking_store: TrackingStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefix: str,
) -> Iterator[Setup]:
    yield from setup_on(moto_s3, tracking_store, monkeypatch, tmp_path, prefix)


@pytest.fixture
def seaweedfs_setup(
    seaweedfs_s3: S3Service,
    tracking_store: TrackingStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefix: str,
) -> Iterator[Setup]:
    """On SeaweedFS: unlike moto, it reports when each multipart upload started."""
    yield from setup_on(seaweedfs_s3, tracking_store, monkeypatch, tmp_path, prefix)


def setup_on(
    service: S3Service,
    tracking_store: TrackingStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefix: str,
) -> Iterator[Setup]:
    env = service.server_env(tmp_path)
    for name, value in env.items():
        if name != "MLFLOW_S3_ENDPOINT_URL":  # boto3 reads the keys from the environment
            monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    storage = S3Storage(f"s3://{BUCKET}/streamed/{prefix}", environ=env)
    sessions = UploadSessions(tracking_store.database)
    scopes = Scopes(ArtifactRoots([storage]), tracking_store)
    try:
        yield Setup(
            storage, sessions, scopes, DirectUploads(scopes, sessions, Settings()),
            StreamedUploads(sessions, TTL), f"streamed/{prefix}",
        )  # fmt: skip
    finally:
        storage.close()


def test_a_file_over_one_part_is_recorded_until_published_or_aborted(setup: Setup) -> None:
    data = os.urandom(PART_SIZE + MiB)
    for name, publish in (("published.bin", True), ("aborted.bin", False)):
        # a declared size this large is written by a writer thread: recorded from there
        incoming = setup.incoming(name, size=len(data))
        incoming.write(data[:MiB])
        assert setup.records(name) == [], "nothing stored yet: nothing to record"
        for start in range(MiB, len(data), MiB):
            incoming.write(data[start : start + MiB])
        assert wait_for(lambda name=name: setup.records(name) not in ([], [STARTING]))
        assert setup.records(name) == setup.in_storage(name), "the record names the upload"
        if publish:
            incoming.seal(Declared()).commit(True)
        else:
            incoming.abort()
        assert setup.records(name) == [] and setup.in_storage(name) == []
    with setup.storage.open_file(parse("published.bin")) as reader:
        assert b"".join(reader.chunks(0, 0, MiB)) == data
    assert setup.records("small.bin") == []
    small = setup.incoming("small.bin")
    small.write(b"x" * 1000)
    small.seal(Declared()).commit(True)
    assert setup.records("small.bin") == [], "one PutObject: nothing to record"


def test_an_upload_left_behind_is_aborted_by_a_sweep_after_the_ttl(setup: Setup) -> None:
    dead = setup.incoming("left.bin")  # no declared size: written on this thread
    dead.write(os.urandom(PART_SIZE + 10))
    left = setup.in_storage("left.bin")
    assert len(left) == 1 and setup.records("left.bin") == left
    # its server "dies": neither commit nor abort ever comes
    setup.direct.sweep()
    assert setup.in_storage("left.bin") == left, "swept before its TTL"
    time.sleep(TTL + 0.2)
    assert setup.direct.sweep() >= 1
    assert setup.in_storage("left.bin") == [] and setup.records("left.bin") == []


def test_a_stream_still_writing_is_never_swept(setup: Setup) -> None:
    data = os.urandom(PART_SIZE + 13 * 64 * 1024)
    live = setup.incoming("live.bin")
    live.write(data[:PART_SIZE])
    live.write(data[PART_SIZE : PART_SIZE + 64 * 1024])
    recorded = setup.records("live.bin")
    assert len(recorded) == 1
    started = time.monotonic()
    for start in range(PART_SIZE + 64 * 1024, len(data), 64 * 1024):
        time.sleep(TTL / 4)
        live.write(data[start : start + 64 * 1024])
        setup.direct.sweep()
        assert setup.in_storage("live.bin") == recorded, "a sweep took an upload in progress"
    assert time.monotonic() - started > 2.5 * TTL
    entry = live.seal(Declared()).commit(True)
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert setup.records("live.bin") == [] and setup.in_storage("live.bin") == []


def test_a_stream_swept_while_idle_fails_instead_of_publishing(setup: Setup) -> None:
    idle = setup.incoming("idle.bin")
    idle.write(os.urandom(PART_SIZE + 10))
    assert setup.records("idle.bin")
    time.sleep(TTL + 0.2)
    setup.direct.sweep()
    assert setup.in_storage("idle.bin") == []
    with pytest.raises(Aborted, match="streamed-upload TTL"):
        idle.write(b"more")
    idle.abort()
    assert setup.records("idle.bin") == []


def test_an_upload_whose_server_died_before_recording_its_id_is_aborted_and_no_other(
    seaweedfs_setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies between S3 creating the multipart upload and the record of its id (a
    replica SIGKILLed there in test_replicas once left its upload for a day). The record made
    just before the creation (`base.STARTING`) lets a sweep abort it once it is
    SETTLE_STARTING_AFTER old, and nothing else on that key: not an upload another session
    records, nor one started a moment ago (a live server between the same two steps)."""
    setup = seaweedfs_setup
    create = setup.sessions.create
    never = threading.Event()  # the writing thread stands for the dead server: it never goes on

    def create_or_die(**fields: Any) -> Any:
        if fields["path"] == "dying.bin" and fields["backend_upload_id"]:
            never.wait()
            raise RuntimeError("this server died before recording the upload's id")
        return create(**fields)

    monkeypatch.setattr(setup.sessions, "create", create_or_die)
    dying = setup.incoming("dying.bin")

    def write() -> None:
        try:
            dying.write(os.urandom(PART_SIZE + 10))
        except RuntimeError:
            dying.abort()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        assert wait_for(lambda: len(setup.in_storage("dying.bin")) == 1)
        dead = setup.in_storage("dying.bin")
        assert setup.records("dying.bin") == [STARTING], "no record of the upload being created"
        client: Any = setup.storage.client
        key = f"{setup.prefix}/dying.bin"
        other = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        session = create(
            kind=MULTIPART, root_uri=setup.storage.uri, path="dying.bin", run_id="",
            owner="bob", backend_upload_id=other, size=PART_SIZE + 10, part_size=PART_SIZE,
            sha256="", overwrite=True, ttl_ms=600_000,
        )  # fmt: skip
        time.sleep(TTL + 0.2)
        setup.direct.sweep()
        assert set(setup.in_storage("dying.bin")) == {*dead, other}, "settled too early"
        assert setup.records("dying.bin") == [STARTING], "the record went before it was settled"
        time.sleep(SETTLE_STARTING_AFTER - TTL)
        fresh = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        assert setup.direct.sweep() >= 1
        assert set(setup.in_storage("dying.bin")) == {other, fresh}
        assert setup.records("dying.bin") == []
        for upload_id in (other, fresh):
            client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
        setup.sessions.close(session.upload_id)
    finally:
        never.set()
        writer.join(30)
    assert setup.in_storage("dying.bin") == [] and setup.records("dying.bin") == []


def test_a_gcs_streams_chunk_objects_are_recorded_and_a_dead_ones_deleted_by_a_sweep(
    gcs_endpoint: str, tracking_store: TrackingStore, tmp_path: Path, prefix: str
) -> None:
    """The same record for GCS, whose streamed files over one chunk go up as hidden chunk
    objects: recorded until published, and a killed server's chunks deleted by a sweep after
    the TTL (before, a start-up sweep a day later)."""
    env = gcs_server_env(gcs_endpoint, tmp_path)
    storage = GCSStorage(f"gs://{BUCKET}/streamed/{prefix}", environ=env)
    sessions = UploadSessions(tracking_store.database)
    scopes = Scopes(ArtifactRoots([storage]), tracking_store)
    setup = Setup(
        storage, sessions, scopes, DirectUploads(scopes, sessions, Settings()),
        StreamedUploads(sessions, TTL), f"streamed/{prefix}",
    )  # fmt: skip
    chunk = storage.upload_chunk

    def chunks() -> list[str]:
        """The hidden chunk objects under this test's root (one upload at a time here)."""
        blobs = storage.bucket.client.list_blobs(BUCKET, prefix=f"streamed/{prefix}/")
        return [b.name for b in blobs if b.name.rsplit("/", 1)[-1].startswith(UPLOAD_PREFIX)]

    try:
        data = os.urandom(chunk + 1000)
        published = setup.incoming("published.bin")
        published.write(data)
        assert len(setup.records("published.bin")) == 1, "a chunk stored: its id recorded"
        published.seal(Declared()).commit(True)
        assert setup.records("published.bin") == [] and chunks() == []
        with storage.open_file(parse("published.bin")) as reader:
            assert b"".join(reader.chunks(0, 0, MiB)) == data

        dead = setup.incoming("left.bin")  # its server "dies" after one chunk
        dead.write(os.urandom(chunk + 10))
        assert len(setup.records("left.bin")) == 1 and chunks()
        setup.direct.sweep()
        assert chunks(), "swept before its TTL"
        time.sleep(TTL + 0.2)
        assert setup.direct.sweep() >= 1
        assert chunks() == [] and setup.records("left.bin") == []
    finally:
        storage.close()
