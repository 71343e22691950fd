"""Storage going away mid-transfer, on every network backend, through a real artifactd process.

Each backend's storage server is stopped while the Python client uploads a 24 MiB file (three
8 MiB parts, blocks or chunks) and while it downloads it, then brought back. FTP's
pyftpdlib, whose files are on disk, is SIGKILLed and restarted on the same port; the others
are cut off by a TCP proxy (tcp_fault_proxy.py) between artifactd and the server, which resets
every open connection and every new one until restored: moto and gcp-storage-emulator keep
their data in memory and would lose it with their process, and Azurite and sshd stand for
servers shared with other uploads. The cut falls at a fixed byte count (the kill, once the FTP
server has written or read that many bytes), so it lands mid-transfer on any machine.

What must hold, per backend:
- a transfer the client does not retry fails with UNAVAILABLE, naming the storage, within
  `UNAVAILABLE_WITHIN` seconds of the cut (artifactd runs with a 3 s storage request timeout),
  and no call fails with INTERNAL; that upload (to a path nobody uploads again) is abandoned;
- the client's bounded retries finish the same transfer once storage is back (a second after
  the cut, inside the client's backoff): the upload is sent again whole (a LogArtifact stream
  is never published in part, so repeating it is safe), the download resumes from the last
  byte received; both with the right sha256;
- artifactd stays up and SERVING throughout, and exits cleanly at the end;
- a listing never shows the file at a size other than its whole one (a watcher lists the
  directory the whole time);
- what the broken uploads (the abandoned one too) left in storage (S3 multipart uploads, GCS chunk objects, Azure
  uncommitted blocks, FTP/SFTP temporary files), which artifactd could not remove while storage
  was away, is gone once the sweeper has run (`--streamed-upload-ttl` 10 s).

The figures (seconds to UNAVAILABLE, leftovers before and after the sweep) are printed per
backend: `pytest -s tests/test_storage_outages.py`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifactd.client import ArtifactClient
from artifactd.client.direct import DirectSettings
from artifactd.client.rpc import open_channel
from artifactd.client.settings import ClientSettings
from artifactd.protocol.errors import ArtifactError, Unavailable
from tcp_fault_proxy import DOWN, UP, TcpFaultProxy

from backend_servers import (
    AZURE_ACCOUNT,
    AZURE_KEY,
    BUCKET,
    FTP_PASSWORD,
    FTP_USER,
    SERVERS_PYTHON,
    S3Service,
    _free_port,
    _start_tcp_server,
    _stop,
    azure_server_env,
    gcs_server_env,
    s3_server_env,
)
from conftest import sha256_of, write_random
from servers import HOST, ServerProcess, start_server

# gcs_endpoint points this process's GCS client at the emulator; the artifactd client warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore::artifactd.client.target.ReservedStorageVariableWarning"
)
MiB = 1024 * 1024
UPLOAD_SIZE = 24 * MiB
SMALL_SIZE = 1 * MiB
CUT_UPLOAD_AT = 12 * MiB  # mid-second part
CUT_DOWNLOAD_AT = 2 * MiB
STORAGE_TIMEOUT = "3"  # MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT of the artifactd server
STREAMED_TTL = "10"
"""Longer than one storage write with its retries may take (Azure: backoffs of 3 and 5 s, ±1):
a write waiting that long is not touching its record, and a sweep would discard it."""
OUTAGE = 1.0  # seconds storage stays away in the retried transfers
UNAVAILABLE_WITHIN = {"azure": 30.0}
"""Seconds from the cut to the client's UNAVAILABLE (15 s where not listed). Azure's worst
case: three attempts of the failed write (waits of 3 and 5 s, ±1), then the client's check
whether the fully sent file landed anyway (GetArtifact: three attempts again); 16-18 s here."""
SWEPT_WITHIN = 15.0
STORAGE_NAMES = {
    "s3": r"object store",
    "gcs": r"GCS bucket",
    "azure": r"Azure container",
    "ftp": r"FTP server 127\.0\.0\.1:\d+",
    "sftp": r"(SSH|SFTP).*127\.0\.0\.1:\d+|127\.0\.0\.1:\d+.*(SSH|SFTP)",
}


@dataclass
class Storage:
    """A storage server artifactd is pointed at, which the test can take away and bring back."""

    destination: str
    env: dict[str, str]
    cut_after: Callable[[str, int], None]
    """Arms an outage once that many more bytes have gone UP (to storage) or DOWN."""
    was_cut: threading.Event
    restore: Callable[[], None]
    leftovers: Callable[[], list[str]]
    """What broken uploads left in storage, looked up behind artifactd's back."""
    cut_at: Callable[[], float]


FTP_SERVER = f"""
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

host, port, home = sys.argv[1:4]
authorizer = DummyAuthorizer()
authorizer.add_user({FTP_USER!r}, {FTP_PASSWORD!r}, home, perm="elradfmwMT")
FTPHandler.authorizer = authorizer
FTPHandler.use_sendfile = False  # downloads read() the file: /proc/PID/io counts them
FTPServer((host, int(port)), FTPHandler).serve_forever()
"""
"""pyftpdlib's server as `python -m pyftpdlib -w` runs it, without sendfile."""


class _Killer:
    """SIGKILLs a process once it has moved `count` more bytes (its /proc/PID/io: an FTP server
    writing an upload to disk, `wchar`, or reading a download from it, `rchar`)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.was_cut = threading.Event()
        self.cut_at = 0.0
        self._armed = threading.Event()
        self._count = 0

    def _moved(self, counter: str) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            if line.startswith(f"{counter}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {counter} in /proc/PID/io")

    def arm(self, direction: str, count: int) -> None:
        self.was_cut.clear()
        counter = "wchar" if direction == UP else "rchar"
        start = self._moved(counter)
        process = self.process

        def watch() -> None:
            while process is not None and process.poll() is None:
                try:
                    if self._moved(counter) - start >= count:
                        self.cut_at = time.monotonic()
                        self.was_cut.set()  # first: the failure may reach the client at once
                        process.send_signal(signal.SIGKILL)
                        process.wait(10)
                        return
                except OSError:
                    return
                time.sleep(0.002)

        threading.Thread(target=watch, daemon=True).start()


@pytest.fixture
def ftp_storage(tmp_path: Path) -> Iterator[Storage]:
    """pyftpdlib with its home on disk, killed by `_Killer` and restarted on the same port."""
    home = tmp_path / "ftp-home"
    home.mkdir()
    port = _free_port()
    command = [SERVERS_PYTHON, "-c", FTP_SERVER, HOST, str(port), str(home)]
    killer = _Killer()

    def start() -> None:
        killer.process = _start_tcp_server(command, port, tmp_path / "ftpd.log", "pyftpdlib")

    start()
    try:
        yield Storage(
            f"ftp://{FTP_USER}:{FTP_PASSWORD}@{HOST}:{port}/artifacts", {},
            killer.arm, killer.was_cut, start,
            lambda: [str(p) for p in home.rglob(".artifactd-upload-*")],
            lambda: killer.cut_at,
        )  # fmt: skip
    finally:
        if killer.process is not None:
            _stop(killer.process)


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], TcpFaultProxy]]:
    proxies: list[TcpFaultProxy] = []

    def make(port: int) -> TcpFaultProxy:
        proxy = TcpFaultProxy(HOST, port)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def _proxied(
    proxy: TcpFaultProxy, destination: str, env: dict[str, str], leftovers: Callable[[], list[str]]
) -> Storage:
    return Storage(
        destination, env, proxy.cut_after, proxy.was_cut, proxy.restore, leftovers,
        lambda: proxy.cut_at or 0.0,
    )  # fmt: skip


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def _s3(
    request: pytest.FixtureRequest, proxy: Callable[[int], TcpFaultProxy], work: Path, prefix: str
) -> Storage:
    endpoint: str = request.getfixturevalue("moto_endpoint")
    front = proxy(_port(endpoint))
    s3 = S3Service("moto", endpoint).client()

    def leftovers() -> list[str]:
        reply = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{prefix}/")
        return [u["Key"] for u in reply.get("Uploads", [])]

    env = s3_server_env(f"http://{front.address}", work)
    return _proxied(front, f"s3://{BUCKET}/{prefix}", env, leftovers)


def _gcs(
    request: pytest.FixtureRequest, proxy: Callable[[int], TcpFaultProxy], work: Path, prefix: str
) -> Storage:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    endpoint: str = request.getfixturevalue("gcs_endpoint")
    front = proxy(_port(endpoint))
    # the endpoint named here, not through STORAGE_EMULATOR_HOST (conftest clears it per test):
    # without either the client would ask Google's real host
    bucket = storage.Client(
        project="artifactd",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    ).bucket(BUCKET)

    def leftovers() -> list[str]:
        return [b.name for b in bucket.list_blobs(prefix=f"{prefix}/") if "/.artifactd-" in b.name]

    env = gcs_server_env(f"http://{front.address}", work)
    return _proxied(front, f"gs://{BUCKET}/{prefix}", env, leftovers)


def _azure(
    request: pytest.FixtureRequest, proxy: Callable[[int], TcpFaultProxy], work: Path, prefix: str
) -> Storage:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import ContainerClient

    connection: str = request.getfixturevalue("azurite_connection")
    endpoint = re.search(r"BlobEndpoint=([^;]+)", connection)
    assert endpoint is not None
    front = proxy(_port(endpoint.group(1)))
    container = ContainerClient.from_connection_string(connection, BUCKET)

    def leftovers() -> list[str]:
        found = []
        blobs = container.list_blobs(name_starts_with=f"{prefix}/", include=["uncommittedblobs"])
        for blob in blobs:
            try:
                if container.get_blob_client(blob.name).get_block_list("uncommitted")[1]:
                    found.append(blob.name)
            except ResourceNotFoundError:
                pass
        return found

    proxied = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
        f"BlobEndpoint=http://{front.address}/{AZURE_ACCOUNT};"
    )
    destination = f"wasbs://{BUCKET}@{AZURE_ACCOUNT}.blob.core.windows.net/{prefix}"
    return _proxied(front, destination, azure_server_env(proxied), leftovers)


def _sftp(
    request: pytest.FixtureRequest, proxy: Callable[[int], TcpFaultProxy], work: Path, prefix: str
) -> Storage:
    port, root, keys = request.getfixturevalue("sftp_server")
    front = proxy(port)
    host_key = (keys / "host_key.pub").read_text().split()
    known_hosts = work / "known_hosts"  # the host key, for the proxy's address
    known_hosts.write_text(f"[{HOST}]:{front.port} {host_key[0]} {host_key[1]}\n")
    directory = root / prefix
    env = {
        "ARTIFACTD_SFTP_IDENTITY_FILE": str(keys / "client_key"),
        "ARTIFACTD_SFTP_KNOWN_HOSTS": str(known_hosts),
        "ARTIFACTD_SFTP_SSH_CONFIG": str(keys / "no-ssh-config"),
        "SSH_AUTH_SOCK": "",
    }
    return _proxied(
        front, f"sftp://root@{front.address}{directory}", env,
        lambda: [str(p) for p in directory.rglob(".artifactd-upload-*")],
    )  # fmt: skip


@pytest.fixture(params=["s3", "gcs", "azure", "ftp", "sftp"])
def storage(
    request: pytest.FixtureRequest,
    proxy_factory: Callable[[int], TcpFaultProxy],
    tmp_path: Path,
) -> Storage:
    name = request.param
    if name == "ftp":
        ftp: Storage = request.getfixturevalue("ftp_storage")
        return ftp
    make = {"s3": _s3, "gcs": _gcs, "azure": _azure, "sftp": _sftp}[name]
    return make(request, proxy_factory, tmp_path, f"outage-{uuid.uuid4().hex[:8]}")


@dataclass
class Watcher:
    """Lists a directory over and over; records every file seen at a size other than its whole
    one in `sizes`, and every file not in it."""

    client: ArtifactClient
    directory: str
    sizes: dict[str, int]
    wrong: list[str] = field(default_factory=list)
    listings: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                infos = self.client.list_artifacts(self.directory, recursive=True)
            except ArtifactError:
                continue  # UNAVAILABLE while storage is away, NOT_FOUND before the first file
            self.listings += 1
            for info in infos:
                if not info.is_dir and info.file_size != self.sizes.get(info.path):
                    self.wrong.append(f"{info.path}: {info.file_size} bytes")

    def stop(self) -> None:
        self._stop.set()


def _client(server: ServerProcess, tmp_path: Path, retries: int) -> ArtifactClient:
    """Transfers through artifactd (no presigned or resumable ones), `retries` on UNAVAILABLE."""
    direct = DirectSettings(
        enabled=False, download_enabled=False, resumable_minimum_size=1 << 40,
        state_dir=str(tmp_path / "state"),
    )  # fmt: skip
    settings = ClientSettings(max_retries=retries, transfer_timeout=120.0)
    return ArtifactClient(server.target, settings=settings, direct=direct)


def _serving(server: ServerProcess) -> bool:
    assert server.process.poll() is None, f"artifactd exited:\n{server.log_text()[-3000:]}"
    with open_channel(server.target, ClientSettings()) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _fails_unavailable(
    storage: Storage, action: Callable[[], Any], direction: str, at: int, backend: str
) -> tuple[float, str]:
    """Cuts storage after `at` bytes while `action` runs; (seconds from the cut to the client's
    UNAVAILABLE, its message)."""
    storage.cut_after(direction, at)
    with pytest.raises(Unavailable) as info:
        action()
    failed = time.monotonic()
    message = info.value.message
    assert storage.was_cut.is_set(), f"{backend}: failed before the cut: {message}"
    elapsed = failed - storage.cut_at()
    assert re.search(STORAGE_NAMES[backend], message), f"{backend}: {message!r}"
    assert not message.startswith("artifactd server unavailable"), "artifactd is up: " + message
    assert FTP_PASSWORD not in message and "testing" not in message, message
    bound = UNAVAILABLE_WITHIN.get(backend, 15.0)
    assert elapsed < bound, f"{backend}: UNAVAILABLE after {elapsed:.1f}s"
    storage.restore()
    return elapsed, message


def _survives_outage(storage: Storage, action: Callable[[], Any], direction: str, at: int) -> Any:
    """Cuts storage after `at` bytes while `action` runs, restores it `OUTAGE` seconds later;
    `action`'s result (its retries must have carried it over the outage)."""
    storage.cut_after(direction, at)

    def bring_back() -> None:
        if storage.was_cut.wait(60):
            time.sleep(OUTAGE)
            storage.restore()

    restorer = threading.Thread(target=bring_back, daemon=True)
    restorer.start()
    try:
        result = action()
    finally:
        restorer.join(70)
    assert storage.was_cut.is_set(), "the transfer finished before the cut"
    return result


def test_a_storage_outage_mid_transfer(
    storage: Storage, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = request.node.callspec.params["storage"]
    env = {**storage.env, "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": STORAGE_TIMEOUT}
    server = start_server(
        tmp_path / "unused", tmp_path / "run", "--streamed-upload-ttl", STREAMED_TTL,
        destination=storage.destination, env=env,
    )  # fmt: skip
    big = tmp_path / "src" / "big.bin"
    big_sha = write_random(big, UPLOAD_SIZE)
    small = tmp_path / "src" / "kept.bin"
    write_random(small, SMALL_SIZE)
    once, retrying = _client(server, tmp_path, 0), _client(server, tmp_path, 5)
    watcher = Watcher(_client(server, tmp_path, 0), "d", {"d/big.bin": UPLOAD_SIZE})
    watching = threading.Thread(target=watcher.run, daemon=True)
    try:
        retrying.log_artifact(small, "d")
        watcher.sizes["d/kept.bin"] = SMALL_SIZE
        watching.start()

        upload_s, upload_message = _fails_unavailable(  # never sent again: only a sweeper cleans
            storage, lambda: once.log_artifact(big, "d", file_name="abandoned.bin"), UP,
            CUT_UPLOAD_AT, backend,
        )  # fmt: skip
        assert _serving(server)
        left = storage.leftovers()
        assert left, f"{backend}: the broken upload left nothing in storage: the sweep is untested"
        started = time.monotonic()
        info = _survives_outage(storage, lambda: retrying.log_artifact(big, "d"), UP, CUT_UPLOAD_AT)
        upload_retry_s = time.monotonic() - started
        assert (info.file_size, info.sha256) == (UPLOAD_SIZE, big_sha)
        assert _serving(server)

        out = tmp_path / "out"
        download_s, _ = _fails_unavailable(
            storage, lambda: once.download_artifacts("d/big.bin", out / "a"), DOWN,
            CUT_DOWNLOAD_AT, backend,
        )  # fmt: skip
        assert not (out / "a" / "d" / "big.bin").exists()
        local = _survives_outage(
            storage, lambda: retrying.download_artifacts("d/big.bin", out / "b"), DOWN,
            CUT_DOWNLOAD_AT,
        )  # fmt: skip
        assert sha256_of(Path(local)) == big_sha
        assert _serving(server)

        deadline = time.monotonic() + SWEPT_WITHIN
        while (remaining := storage.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not remaining, f"{backend}: left in storage after the sweeper ran: {remaining}"
        listed = {i.path: i.file_size for i in retrying.list_artifacts("d", recursive=True)}
        assert listed == {"d/big.bin": UPLOAD_SIZE, "d/kept.bin": SMALL_SIZE}, listed
        crashes = re.findall(r".* crashed \(ref .*", server.log_text())
        assert not crashes, f"{backend}: INTERNAL errors during the outage: {crashes}"
    finally:
        watcher.stop()
        if watching.is_alive():
            watching.join(30)  # a listing in flight at a shutdown is cancelled, not drained
        for c in (once, retrying, watcher.client):
            c.close()
        code = server.stop()
    assert not watcher.wrong, f"{backend}: a listing showed a partial file: {watcher.wrong}"
    assert watcher.listings > 0
    assert code == 0, f"artifactd exited with {code}:\n{server.log_text()[-3000:]}"
    print(
        f"\n{backend}: upload UNAVAILABLE {upload_s:.2f}s after the cut "
        f"({upload_message[:160]!r}); download UNAVAILABLE {download_s:.2f}s; retried upload "
        f"over a {OUTAGE:g}s outage done in {upload_retry_s:.2f}s; leftovers after the failed "
        f"upload {len(left)}, after the sweep 0"
    )
