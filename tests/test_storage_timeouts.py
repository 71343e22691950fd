"""`MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` bounds every network backend.

A storage server that accepts connections and then never answers is the fault: a real listening
socket on 127.0.0.1 that reads nothing and sends nothing. Every backend must give up with
UNAVAILABLE (and a message saying what it could not reach) within a few attempts of the timeout,
rather than hold the RPC for its library's default (Azure: 10 tries with backoff from 15 s; GCS:
two minutes of retries; FTP and SFTP: no limit at all).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from artifactd.protocol.errors import InvalidArgument, Unavailable
from artifactd.protocol.paths import parse
from artifactd_server.storage import open_storage
from artifactd_server.storage.common import transfer_timeout

from backend_servers import AZURE_ACCOUNT, AZURE_KEY

TIMEOUT = 0.5
LIMIT = 25.0  # three attempts and the libraries' backoff, on a noisy machine


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server on 127.0.0.1 that accepts every connection and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)  # so the accepting thread notices `stop`
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in accepted:
            conn.close()


def _settings(backend: str, port: int) -> tuple[str, dict[str, str]]:
    endpoint = f"http://127.0.0.1:{port}"
    if backend == "s3":
        return "s3://bucket/prefix", {
            "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        }  # fmt: skip
    if backend == "gcs":
        return "gs://bucket/prefix", {
            "STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "artifactd",
        }  # fmt: skip
    if backend == "azure":
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
            f"BlobEndpoint={endpoint}/{AZURE_ACCOUNT};"
        )
        return f"wasbs://container@{AZURE_ACCOUNT}.blob.core.windows.net/prefix", {
            "AZURE_STORAGE_CONNECTION_STRING": connection
        }
    if backend == "ftp":
        return f"ftp://user:pw@127.0.0.1:{port}/artifacts", {}
    return f"sftp://user@127.0.0.1:{port}/artifacts", {"ARTIFACTD_SFTP_ACCEPT_NEW_HOST_KEYS": "1"}


@pytest.mark.parametrize("backend", ["s3", "gcs", "azure", "ftp", "sftp"])
def test_a_silent_storage_server_fails_the_request_in_time(
    backend: str, silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination, env = _settings(backend, silent_port)
    monkeypatch.setenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", str(TIMEOUT))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        storage = open_storage(destination)  # FTP and SFTP connect here, the others on use
        storage.stat(parse("model.bin"))
    elapsed = time.monotonic() - started
    assert elapsed < LIMIT, f"{backend} waited {elapsed:.1f}s on a server that never answers"
    assert "127.0.0.1" in info.value.message or "reached" in info.value.message
    assert "pw" not in info.value.message and "testing" not in info.value.message


REFUSED_LIMIT = 15.0  # Azure: waits of 3 and 5 s (±1) between its three attempts


@pytest.fixture
def refused_port() -> int:
    """A port on 127.0.0.1 nothing listens on: a storage server that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("backend", ["s3", "gcs", "azure", "ftp", "sftp"])
def test_a_storage_server_that_is_down_fails_the_request_in_seconds(
    backend: str, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the default timeout (a minute): a refused connection fails at once, and the retries
    must not stretch that into minutes (GCS retried it for three timeouts, three minutes)."""
    destination, env = _settings(backend, refused_port)
    monkeypatch.delenv("MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        storage = open_storage(destination)
        storage.stat(parse("model.bin"))
    elapsed = time.monotonic() - started
    assert elapsed < REFUSED_LIMIT, f"{backend} took {elapsed:.1f}s to give up on a refused port"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_timeout_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(InvalidArgument, match="MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT"):
        transfer_timeout({"MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": value})


def test_the_timeout_defaults_to_a_minute() -> None:
    assert transfer_timeout({}) == 60.0
    assert transfer_timeout({"MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": " 2.5 "}) == 2.5
