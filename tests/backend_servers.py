"""One real artifactd server per storage backend, for the backend conformance suite.

`backend` is session-scoped and parametrized over `BACKENDS`: local disk, and S3 served by moto's
standalone server (`python -m moto.server`) on 127.0.0.1 and an ephemeral port, with a bucket
made for the session. Every process is started in its own session and stopped by its PID. moto
failing to start fails the tests that need it, saying why; they are never skipped.
"""

from __future__ import annotations

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

from servers import HOST, ServerProcess, start_server

BACKENDS = ("local", "s3")
BUCKET = "artifactd-conformance"
S3_PREFIX = "root/artifacts"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
S3_REGION = "us-east-1"


@dataclass
class Backend:
    """A running artifactd on one backend, and direct access to what it stored."""

    name: str
    server: ServerProcess
    s3: Any = None
    """A boto3 S3 client on the moto server (S3 only), for checks behind the server's back."""

    def leftovers(self, directory: str) -> list[str]:
        """What an interrupted upload may have left: hidden temp files or multipart uploads."""
        if self.s3 is None:
            return [str(p) for p in (self.server.root / directory).rglob(".artifactd-*")]
        reply = self.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/{directory}/")
        return [u["Key"] for u in reply.get("Uploads", [])]


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
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
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


def s3_server_env(endpoint: str, workdir: Path) -> dict[str, str]:
    """The artifactd server's environment for moto: endpoint, dummy keys, no AWS files or IMDS."""
    missing = str(workdir / "no-aws-config")
    return {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        **S3_KEYS,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_CONFIG_FILE": missing,
        "AWS_SHARED_CREDENTIALS_FILE": missing,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="session", params=BACKENDS, ids=list(BACKENDS))
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    base = tmp_path_factory.mktemp(f"backend-{request.param}")
    s3 = None
    if request.param == "local":
        server = start_server(base / "store", base / "run")
    else:
        import boto3

        endpoint: str = request.getfixturevalue("moto_endpoint")
        server = start_server(
            base / "unused", base / "run",
            destination=f"s3://{BUCKET}/{S3_PREFIX}", env=s3_server_env(endpoint, base),
        )  # fmt: skip
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name=S3_REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
    try:
        yield Backend(request.param, server, s3)
    finally:
        code = server.stop()
        if s3 is not None:
            s3.close()
        assert code == 0, f"server exited with {code}:\n{server.log_text()}"
