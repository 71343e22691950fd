"""The Python client's direct transfers through a real server on Azure Blob (Azurite) and GCS
(gcp-storage-emulator): parts straight to storage, completed by the server, fetched back with
presigned range GETs. S3's protocol-level cases (faults, resume, sweeping) are in
test_direct_s3.py; the adapters' own in test_direct_azure.py and test_direct_gcs.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactd.client import ArtifactClient
from artifactd.client.direct import DirectSettings
from artifactd_server.storage.gcs import SIGNING_KEY_VARIABLE

from backend_servers import (
    AZURE_ACCOUNT,
    AZURE_PREFIX,
    BUCKET,
    GCS_PREFIX,
    azure_server_env,
    gcs_server_env,
)
from servers import ServerProcess, start_server

MiB = 1024 * 1024


@pytest.fixture(params=["azure", "gcs"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    if request.param == "azure":
        connection: str = request.getfixturevalue("azurite_connection")
        destination = f"wasbs://{BUCKET}@{AZURE_ACCOUNT}.blob.core.windows.net/{AZURE_PREFIX}"
        env = azure_server_env(connection)
    else:
        endpoint: str = request.getfixturevalue("gcs_endpoint")
        key: Path = request.getfixturevalue("signing_key")
        destination = f"gs://{BUCKET}/{GCS_PREFIX}"
        env = {**gcs_server_env(endpoint, tmp_path), SIGNING_KEY_VARIABLE: str(key)}
    server = start_server(tmp_path / "unused", tmp_path / "run", destination=destination, env=env)
    yield server
    assert server.stop() == 0, server.log_text()


def test_client_uploads_and_downloads_directly(
    server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    settings = DirectSettings(
        enabled=True, minimum_size=MiB, part_size=MiB, workers=3,
        state_dir=str(tmp_path / "state"), download_enabled=True,
        download_minimum_size=MiB, download_chunk_size=MiB,
    )  # fmt: skip
    local = tmp_path / "weights.bin"
    local.write_bytes(os.urandom(3 * MiB + 123))
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    with ArtifactClient(server.target, direct=settings) as client:
        caps = client.get_capabilities()
        assert caps.supports_multipart_upload and caps.supports_presigned_urls
        info = client.log_artifact(local, prefix)
        assert (info.file_size, info.sha256) == (3 * MiB + 123, digest)
        back = Path(client.download_artifacts(f"{prefix}/weights.bin", tmp_path / "back"))
        assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
        assert [i.path for i in client.list_artifacts(prefix)] == [f"{prefix}/weights.bin"]
    log = server.log_text()
    assert "multipart upload" in log and "completed multipart upload" in log
