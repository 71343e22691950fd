"""Interrupted uploads never become visible and never damage the stored version."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from waiting import wait_for

from conftest import visible_files
from servers import ServerProcess, start_server

CHUNK = b"\xab" * (256 * 1024)


def stalled_upload(
    path: str, sent: threading.Event, release: threading.Event
) -> Iterator[pb.LogArtifactRequest]:
    """Sends 4 MiB of a file, signals `sent`, then blocks until `release` (never finishing)."""
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path))
    for _ in range(16):
        yield pb.LogArtifactRequest(data=CHUNK)
    sent.set()
    release.wait(60)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".artifactd-*")]


def test_client_cancel_leaves_nothing_and_keeps_old_version(
    server: ServerProcess,
    stub: pb_grpc.ArtifactServiceStub,
    client: ArtifactClient,
    prefix: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "model.bin").write_bytes(b"version 1")
    client.log_artifact(tmp_path / "model.bin", prefix)
    sent, release = threading.Event(), threading.Event()
    future = stub.LogArtifact.future(stalled_upload(f"{prefix}/model.bin", sent, release))
    assert sent.wait(10)
    time.sleep(0.3)  # let the server write what it received
    assert temp_files(server.root / prefix), "the upload is being written to a hidden temp file"
    future.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    assert wait_for(lambda: not temp_files(server.root / prefix)), "temp file must be removed"
    assert (server.root / prefix / "model.bin").read_bytes() == b"version 1"
    assert [i.path for i in client.list_artifacts(prefix)] == [f"{prefix}/model.bin"]


def test_client_deadline_mid_upload_publishes_nothing(
    server: ServerProcess, stub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    sent, release = threading.Event(), threading.Event()
    with pytest.raises(grpc.RpcError) as err:
        stub.LogArtifact(stalled_upload(f"{prefix}/new/deep.bin", sent, release), timeout=1.5)
    release.set()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(
        lambda: not (server.root / prefix).exists() or not visible_files(server.root / prefix)
    )
    assert wait_for(lambda: not (server.root / prefix / "new").exists()), "made directories go too"


def test_server_sigkill_mid_upload(tmp_path: Path) -> None:
    root = tmp_path / "store"
    server = start_server(root, tmp_path / "run")
    try:
        with ArtifactClient(server.target) as client:
            (tmp_path / "w.bin").write_bytes(b"stored before the crash")
            client.log_artifact(tmp_path / "w.bin", "m")
        sent, release = threading.Event(), threading.Event()
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            future = stub.LogArtifact.future(stalled_upload("m/w.bin", sent, release))
            future2 = stub.LogArtifact.future(
                stalled_upload("m/other/new.bin", threading.Event(), release)
            )
            assert sent.wait(10)
            time.sleep(0.3)
            server.stop(signal.SIGKILL)
            release.set()
            for f in (future, future2):
                with pytest.raises(grpc.RpcError) as err:
                    f.result(timeout=10)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(signal.SIGKILL)
    assert (root / "m" / "w.bin").read_bytes() == b"stored before the crash"
    restarted = start_server(root, tmp_path / "run2")
    try:
        with ArtifactClient(restarted.target) as client:
            listed = [i.path for i in client.list_artifacts("", recursive=True)]
            assert "m/w.bin" in listed and "m/other/new.bin" not in listed
            assert not any(".artifactd" in p for p in listed), listed
            out = client.download_artifacts("m/w.bin", tmp_path / "dst")
            assert Path(out).read_bytes() == b"stored before the crash"
    finally:
        assert restarted.stop() == 0


def test_incomplete_uploads_of_a_crashed_server_are_swept(tmp_path: Path) -> None:
    """A temp file untouched for a day (a crashed upload) is removed at start-up; fresh ones stay."""
    import os

    root = tmp_path / "store"
    (root / "d").mkdir(parents=True)
    old = root / "d" / ".artifactd-upload-deadbeef"
    fresh = root / "d" / ".artifactd-upload-cafe"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    server = start_server(root, tmp_path / "run")
    try:
        assert wait_for(lambda: not old.exists())
        assert fresh.exists()
    finally:
        assert server.stop() == 0
