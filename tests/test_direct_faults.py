"""The client's direct uploads under storage faults, on S3 (moto and SeaweedFS), Azure Blob
(Azurite) and GCS (gcp-storage-emulator), each behind `fault_proxy` (a real HTTP proxy that
answers 503 or 400, delays or holds a chosen part). The server signs URLs for the proxy's address,
so the client's part uploads pass through it.

Azurite and SeaweedFS enforce signatures and expiry: a part URL delayed past its expiry is
refused there with 403 and the client must sign it again. moto and the GCS emulator check
neither, so on them the same delay simply succeeds.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from artifactd.client import ArtifactClient
from artifactd.client.direct import DirectSettings
from artifactd.protocol.errors import FailedPrecondition, NotFound
from artifactd_server.storage.gcs import SIGNING_KEY_VARIABLE

from backend_servers import (
    AZURE_ACCOUNT,
    AZURE_PREFIX,
    BUCKET,
    GCS_PREFIX,
    S3_PREFIX,
    S3Service,
    azure_server_env,
    gcs_server_env,
)
from fault_proxy import HANG, FaultProxy
from servers import ServerProcess, start_server

MiB = 1024 * 1024
SIZE = 3 * MiB + 17  # three parts of 1 MiB and a short fourth (S3: 5 MiB parts, three)
URL_TTL = "1"  # seconds: a part delayed 2.5 s reaches storage with an expired URL


@dataclass
class Store:
    name: str
    server: ServerProcess
    proxy: FaultProxy
    part_size: int

    @property
    def parts(self) -> int:
        return -(-SIZE // self.part_size)


@pytest.fixture(scope="module", params=["s3", "s3-seaweedfs", "azure", "gcs"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    base = tmp_path_factory.mktemp(f"faults-{request.param}")
    if request.param.startswith("s3"):
        service: S3Service = request.getfixturevalue(
            "seaweedfs_s3" if request.param == "s3-seaweedfs" else "moto_s3"
        )
        proxy = FaultProxy(service.endpoint, keep_host=True)  # SeaweedFS checks the Host signed
        destination = f"s3://{BUCKET}/{S3_PREFIX}"
        env = service.server_env(base, endpoint=proxy.endpoint)
        part_size = 5 * MiB  # S3's smallest
    elif request.param == "azure":
        connection: str = request.getfixturevalue("azurite_connection")
        upstream = connection.split("BlobEndpoint=", 1)[1].split(f"/{AZURE_ACCOUNT}", 1)[0]
        proxy = FaultProxy(upstream)
        destination = f"wasbs://{BUCKET}@{AZURE_ACCOUNT}.blob.core.windows.net/{AZURE_PREFIX}"
        env = azure_server_env(connection.replace(upstream, proxy.endpoint))
        part_size = MiB
    else:
        upstream = request.getfixturevalue("gcs_endpoint")
        key: Path = request.getfixturevalue("signing_key")
        proxy = FaultProxy(upstream)
        destination = f"gs://{BUCKET}/{GCS_PREFIX}"
        env = {**gcs_server_env(proxy.endpoint, base), SIGNING_KEY_VARIABLE: str(key)}
        part_size = MiB
    proxy.start()
    server = start_server(
        base / "unused", base / "run", "--presigned-url-ttl", URL_TTL,
        destination=destination, env=env,
    )  # fmt: skip
    try:
        yield Store(request.param, server, proxy, part_size)
    finally:
        code = server.stop()
        proxy.stop()
        assert code == 0, server.log_text()


@pytest.fixture
def faults(store: Store) -> Iterator[FaultProxy]:
    proxy = store.proxy
    proxy.faults.clear()
    proxy.part_puts.clear()
    proxy.release.clear()
    yield proxy
    proxy.release.set()
    proxy.faults.clear()


def settings(store: Store, state: Path) -> DirectSettings:
    return DirectSettings(
        enabled=True, minimum_size=MiB, part_size=store.part_size, workers=2,
        state_dir=str(state), download_enabled=False,
    )  # fmt: skip


def payload(tmp_path: Path, store: Store) -> Path:
    local = tmp_path / "weights.bin"
    local.write_bytes(os.urandom(12 * MiB if store.name.startswith("s3") else SIZE))
    return local


def upload(store: Store, local: Path, prefix: str, tmp_path: Path) -> str:
    with ArtifactClient(store.server.target, direct=settings(store, tmp_path / "state")) as c:
        return c.log_artifact(local, prefix).sha256


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failing_part_is_retried(
    store: Store, faults: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    faults.faults[2] = [503, 500]
    local = payload(tmp_path, store)
    assert upload(store, local, prefix, tmp_path) == sha(local)
    assert faults.part_puts.count(2) == 1  # the two failures never reached storage


def test_an_expired_url_is_signed_again(
    store: Store, faults: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    faults.faults[1] = [2.5]  # part 1's URL (valid 1 s) reaches storage 2.5 s after signing
    local = payload(tmp_path, store)
    assert upload(store, local, prefix, tmp_path) == sha(local)
    # Azurite and SeaweedFS refused the late URL (403) and the client signed it again; the
    # others accept it.
    assert faults.part_puts.count(1) == (2 if store.name in ("azure", "s3-seaweedfs") else 1)


def test_a_fatal_part_failure_aborts_and_stores_nothing(
    store: Store, faults: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    faults.faults[1] = [400]
    local = payload(tmp_path, store)
    with pytest.raises(FailedPrecondition, match="refused part 1 with HTTP 400"):
        upload(store, local, prefix, tmp_path)
    with ArtifactClient(store.server.target) as client, pytest.raises(NotFound):
        client.get_artifact_info(f"{prefix}/weights.bin")
    assert "aborted multipart upload" in store.server.log_text()


def test_a_killed_client_resumes_with_the_parts_storage_has(
    store: Store, faults: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    local = payload(tmp_path, store)
    last = -(-local.stat().st_size // store.part_size)
    faults.faults[last] = [HANG]
    state = tmp_path / "state"
    script = (
        "from artifactd.client import ArtifactClient\n"
        "from artifactd.client.direct import DirectSettings\n"
        f"s = DirectSettings(True, {MiB}, {store.part_size}, 1, {str(state)!r}, "
        "download_enabled=False)\n"
        f"ArtifactClient({store.server.target!r}, direct=s).log_artifact({str(local)!r}, "
        f"{prefix!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sorted(faults.part_puts) != list(range(1, last)):
            assert process.poll() is None and time.monotonic() < deadline, faults.part_puts
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    faults.release.set()
    faults.part_puts.clear()
    assert upload(store, local, prefix, tmp_path) == sha(local)
    # Only the part storage lacked is sent again (more than once if storage, loaded by the
    # other tests, failed the first try: a retry is the client's job).
    assert set(faults.part_puts) == {last}, faults.part_puts
