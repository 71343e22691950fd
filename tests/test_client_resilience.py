"""The client retries what is safe to retry, resumes downloads, and never keeps corrupt bytes."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from artifactd.client import ArtifactClient, ClientSettings, localfiles
from artifactd.protocol import errors

from conftest import sha256_of, visible_files, write_random
from servers import ServerProcess, start_server


def reserved_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_idempotent_calls_wait_for_an_unavailable_server(tmp_path: Path) -> None:
    port = reserved_port()
    holder: list[ServerProcess] = []

    def start_later() -> None:
        time.sleep(1.0)
        holder.append(start_server(tmp_path / "store", tmp_path / "run", "--port", str(port)))

    # the helper passes --port 0 first; a later --port wins in click
    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        with ArtifactClient(f"127.0.0.1:{port}", settings=ClientSettings(max_retries=8)) as client:
            assert client.list_artifacts() == []
    finally:
        starter.join()
        for server in holder:
            assert server.stop() == 0


def test_uploads_are_not_retried(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    settings = ClientSettings(max_retries=8)
    with ArtifactClient(f"127.0.0.1:{reserved_port()}", settings=settings) as client:
        t0 = time.monotonic()
        with pytest.raises(errors.Unavailable):
            client.log_artifact(tmp_path / "f")
        assert time.monotonic() - t0 < 5, "an upload fails at once instead of backing off"


def kill_and_restart_mid_download(
    monkeypatch: pytest.MonkeyPatch, server: ServerProcess, workdir: Path, after: int
) -> list[ServerProcess]:
    """Makes the next download SIGKILL `server` once `after` bytes of a file have arrived, and
    start it again on the same port and root (the list gets the new process): a stream broken
    by a real server crash, at a chosen byte."""
    restarted: list[ServerProcess] = []
    original_write = localfiles.VerifiedFile.write

    def write_then_crash_once(self: localfiles.VerifiedFile, data: bytes) -> None:
        original_write(self, data)
        if not restarted and self.received >= after:
            server.stop(signal.SIGKILL)  # the real server dies mid-download ...
            restarted.append(  # ... and returns
                start_server(server.root, workdir, "--port", str(server.port))
            )

    monkeypatch.setattr(localfiles.VerifiedFile, "write", write_then_crash_once)
    return restarted


def test_download_resumes_after_the_server_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run", "--port", str(reserved_port()))
    digest = write_random(tmp_path / "big.bin", 96 * 1024 * 1024)
    restarted: list[ServerProcess] = []
    try:
        with ArtifactClient(server.target, settings=ClientSettings(max_retries=8)) as client:
            client.log_artifact(tmp_path / "big.bin", "m")
            restarted = kill_and_restart_mid_download(
                monkeypatch, server, tmp_path / "run2", 8 * 1024 * 1024
            )
            out = client.download_artifacts("m/big.bin", tmp_path / "dst")
        assert restarted, "the server was restarted during the download"
        assert sha256_of(Path(out)) == digest
        assert visible_files(tmp_path / "dst") == ["m/big.bin"]
    finally:
        server.stop(signal.SIGKILL)
        for again in restarted:
            assert again.stop() == 0


@pytest.mark.parametrize("size", [1024 * 1024, 16 * 1024 * 1024], ids=["inline", "writer-thread"])
def test_corruption_on_the_server_is_caught_and_nothing_is_kept(
    client: ArtifactClient, server: ServerProcess, prefix: str, tmp_path: Path, size: int
) -> None:
    write_random(tmp_path / "w.bin", size)
    client.log_artifact(tmp_path / "w.bin", prefix)
    stored = server.root / prefix / "w.bin"
    before = stored.stat()
    with open(stored, "r+b") as fh:  # bit rot: same size, and the mtime put back
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(stored, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(errors.DataLoss) as err:
        client.download_artifacts(f"{prefix}/w.bin", tmp_path / "dst")
    assert "sha256" in err.value.message
    assert visible_files(tmp_path / "dst") == []


def test_deadline_from_the_environment(
    server: ServerProcess, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", "0.000001")
    # gRPC rounds a deadline up to the next millisecond, and the client has already connected
    # (it asked for the server's capabilities): a file that can go up within 1 ms would pass.
    (tmp_path / "f").write_bytes(b"x" * (16 * 1024 * 1024))
    with ArtifactClient(server.target) as client, pytest.raises(errors.DeadlineExceeded):
        client.log_artifact(tmp_path / "f", prefix)
    monkeypatch.setenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", "-1")
    assert ClientSettings.from_env().transfer_timeout is None
    monkeypatch.setenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(errors.InvalidArgument):
        ArtifactClient(server.target)
