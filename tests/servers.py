"""Starts real artifactd server processes for the tests, on 127.0.0.1 and an ephemeral port.

The server binds port 0 and writes the port it got to a file (`--port-file`), so there is no
window in which another process could take a port picked in advance. Every process is stopped by
its PID in teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifactd.client.rpc import open_channel
from artifactd.client.settings import ClientSettings

HOST = "127.0.0.1"
STARTED: list[ServerProcess] = []
"""Every server the tests started, so the suite can check their roots for leftovers."""


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path
    extra: list[str] = field(default_factory=list)
    killed: bool = False
    """Stopped by SIGKILL (or killed after not stopping): its uploads may be left behind."""

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signals the server by PID and waits; SIGKILL if it does not exit in `timeout`."""
        if self.process.poll() is None:
            self.killed = sig == signal.SIGKILL
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(
    root: Path,
    workdir: Path,
    *args: str,
    timeout: float = 30.0,
    destination: str | None = None,
    env: dict[str, str] | None = None,
    client: ClientSettings | None = None,
) -> ServerProcess:
    """Starts `artifactd serve` on `root` and waits until its health service says SERVING.

    `destination` replaces `root` as `--artifacts-destination` (a URI such as `s3://bucket/p`;
    `root` is then only recorded), and `env` adds to the server's environment. The server is
    the installed `artifactd-server` (editable in the dev venv, wheels in the MLflow venv). `client` is how the health check connects (TLS, a
    client certificate, a token); plaintext without one.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / f"port-{time.monotonic_ns()}"
    log = workdir / f"server-{time.monotonic_ns()}.log"
    command = [
        sys.executable, "-m", "artifactd.cli.main", "serve",
        "--host", HOST, "--port", "0", "--port-file", str(port_file),
        "--artifacts-destination", destination or str(root), *args,
    ]  # fmt: skip
    env = {**os.environ, **(env or {})}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, cwd=workdir,  # the default SQLite store lands there
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None:
            raise RuntimeError(
                f"artifactd exited with {process.returncode} before serving:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"artifactd did not start in {timeout}s:\n{log.read_text()}")
        time.sleep(0.05)
    server = ServerProcess(process, int(port_file.read_text()), root, log, list(args))
    STARTED.append(server)
    wait_serving(server.target, timeout=max(1.0, deadline - time.monotonic()), client=client)
    return server


def wait_serving(target: str, timeout: float = 10.0, client: ClientSettings | None = None) -> None:
    with open_channel(target, client or ClientSettings()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`python -m artifactd.cli.main ARGS` of the installed distributions (`env` adds to this
    process's environment), its output captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "artifactd.cli.main", *args],
        env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
