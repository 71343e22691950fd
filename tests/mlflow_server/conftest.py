"""Real `mlflow server` processes on a real artifactd server, for the tests of this folder.

These tests need full `mlflow` (the tracking server and its UI), which the development
environment does not install (it has `mlflow-skinny`): `scripts/test_mlflow.sh` builds a
virtualenv with `pip install mlflow ./client './server[all]'` and runs them there.

Both kinds of server are started on 127.0.0.1, stopped by their process group in teardown
(`mlflow server` starts uvicorn workers under it), with MLflow's telemetry and job runner off so
nothing contacts any other address and no background worker outlives the test.
"""

from __future__ import annotations

import contextlib
import os
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

import pytest

from servers import HOST, ServerProcess, start_server

try:
    import mlflow.server  # noqa: F401  (full mlflow: the tracking server and its UI)
    from mlflow.version import VERSION as MLFLOW_VERSION
except ImportError as exc:  # pragma: no cover - the wrong environment, said plainly
    raise pytest.UsageError(
        f"tests/mlflow_server needs full mlflow ({exc}); run scripts/test_mlflow.sh"
    ) from exc

QUIET_MLFLOW = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
"""MLflow's usage telemetry would contact a host outside this machine; its job runner starts
a handful of consumer processes nothing here uses."""

os.environ.update(QUIET_MLFLOW)  # for the MLflow client in this process and its children


def pytest_report_header() -> str:
    return f"mlflow {MLFLOW_VERSION}"


def free_port() -> int:
    """A port free a moment ago (`mlflow server` cannot report the port it bound)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class MlflowServer:
    process: subprocess.Popen[bytes]
    url: str
    backend_store_uri: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the server's whole process group, SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):  # its workers share the group: none
            os.killpg(self.process.pid, signal.SIGKILL)  # may outlive the test
        self.process.wait(10)


def start_mlflow_server(workdir: Path, *args: str, timeout: float = 120.0) -> MlflowServer:
    """`mlflow server ARGS` on a SQLite backend store in `workdir`, once /health answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    backend = f"sqlite:///{workdir / 'mlflow.db'}"
    log = workdir / "mlflow-server.log"
    for _attempt in range(3):  # the port was free when picked; another process may take it
        port = free_port()
        command = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--host", HOST, "--port", str(port), "--workers", "1",
            "--backend-store-uri", backend, *args,
        ]  # fmt: skip
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **QUIET_MLFLOW}, start_new_session=True, cwd=workdir,
            )  # fmt: skip
        server = MlflowServer(process, f"http://{HOST}:{port}", backend, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as reply:  # noqa: S310
                    if reply.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        server.stop()
        if "address already in use" not in server.log_text().lower():
            break
    raise RuntimeError(f"mlflow server did not start:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="session")
def artifactd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("artifactd")
    process = start_server(base / "store", base / "run")
    yield process
    assert process.stop() == 0, process.log_text()


@pytest.fixture(scope="session")
def server_a(
    artifactd: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """Mode A: the tracking server hands clients `artifactd://` locations; they transfer
    directly with the plugin, and the server reads through it for its UI."""
    server = start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-a"),
        "--default-artifact-root", f"artifactd://{artifactd.target}/mlflow-a",
        "--no-serve-artifacts",
    )  # fmt: skip
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server_b(
    artifactd: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """Mode B: the tracking server proxies artifacts (`mlflow-artifacts:` for clients) into
    artifactd; clients need no plugin."""
    server = start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-b"),
        "--artifacts-destination", f"artifactd://{artifactd.target}/mlflow-b",
    )  # fmt: skip
    yield server
    server.stop()
