"""Fixtures: a real artifactd server process shared by the session, clients and stubs for it."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from servers import STARTED, ServerProcess, start_server

pytest_plugins = ("run_fixtures", "backend_servers", "small_disk")

# Tests never contact anything but 127.0.0.1: boto3's credential chain would otherwise ask the
# cloud instance-metadata address when no keys are configured. Server processes inherit this.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

if TYPE_CHECKING:
    from artifactd_server.store.tracking import TrackingStore

TRANSIENT_UPLOAD_PREFIX = ".artifactd-upload-"
"""Names of the server's temporary upload files start with this."""

# The backend stores the store's tests run on (see tests/databases.py).
STORE_BACKENDS = ("sqlite", "postgresql", "mariadb")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One artifactd process for the session; each test works under its own `prefix`."""
    base = tmp_path_factory.mktemp("artifactd")
    process = start_server(base / "store", base / "run")
    yield process
    code = process.stop()
    assert code == 0, f"server exited with {code}:\n{process.log_text()}"


def temp_upload_files(root: Path, *, in_progress_only: bool = False) -> list[str]:
    """Temporary upload files under `root`. Those of uploads in progress carry their owner
    (`<prefix><owner>-<token>`); `in_progress_only` leaves out resumable uploads' kept bytes."""
    found = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            rest = name[len(TRANSIENT_UPLOAD_PREFIX) :]
            if name.startswith(TRANSIENT_UPLOAD_PREFIX) and (not in_progress_only or "-" in rest):
                found.append(os.path.join(directory, name))
    return found


@pytest.fixture(scope="module", autouse=True)
def _no_upload_left_behind() -> Iterator[None]:
    """After each test module: no temporary upload file of a server that was not killed stays
    under its root (resumable uploads' kept bytes, named without an owner, may)."""
    yield
    roots = {server.root for server in STARTED}
    killed = {server.root for server in STARTED if server.killed}
    for root in sorted(roots - killed):
        deadline = time.monotonic() + 10  # an upload cut off just now is still being aborted
        while (leftovers := temp_upload_files(root, in_progress_only=True)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert not leftovers, f"temporary upload files left behind: {leftovers[:5]}"


@pytest.fixture
def prefix() -> str:
    """A fresh directory name, so tests sharing the server never see each other's artifacts."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(server: ServerProcess) -> Iterator[ArtifactClient]:
    with ArtifactClient(server.target) as c:
        yield c


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.ArtifactServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.ArtifactServiceStub(channel)


@pytest.fixture(autouse=True)
def _no_storage_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from an environment without client-side storage variables or timeouts."""
    from artifactd.client.target import RESERVED_STORAGE_VARIABLES

    for name in (*RESERVED_STORAGE_VARIABLES, "ARTIFACTD_SERVER", "ARTIFACTD_STRICT_ENV",
                 "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def write_random(path: Path, size: int) -> str:
    """Writes `size` random bytes to `path` in pieces; returns their sha256."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            digest.update(block)
            fh.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def visible_files(root: Path) -> list[str]:
    """Every file under `root`, relative, including hidden ones (tests look for leftovers).

    Folders the server removes while this walks them (an aborted upload's) simply end the walk
    there: an empty answer, not an error.
    """
    found = []
    for directory, _dirs, files in os.walk(root):  # os.walk ignores folders that vanish
        paths = (Path(directory) / name for name in files)
        found.extend(str(p.relative_to(root)) for p in paths if p.is_file())
    return sorted(found)


def stored_files(root: Path) -> list[str]:
    """`visible_files` but the owner marks a LocalStorage keeps at its root: what uploads left
    (published files, and temporary ones, of which none may stay)."""
    return [name for name in visible_files(root) if not name.startswith(".artifactd-owners")]


@pytest.fixture(scope="session", params=STORE_BACKENDS, ids=list(STORE_BACKENDS))
def database_uri(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh backend-store database per backend for the session; tests use unique names."""
    from databases import fresh_database  # SQLAlchemy only for the tests that use a store

    with fresh_database(request.param, tmp_path_factory.mktemp("sqlite")) as uri:
        yield uri


@pytest.fixture
def tracking_store(database_uri: str) -> Iterator[TrackingStore]:
    """A store on the session's database for `database_uri`'s backend; its engine is closed after."""
    from artifactd_server.store.database import open_database
    from artifactd_server.store.tracking import TrackingStore

    database = open_database(database_uri)
    try:
        yield TrackingStore(database)
    finally:
        database.close()
