"""Observability against a real server process: Prometheus metrics scraped over HTTP on their
own port, JSON log lines (the access log among them), request ids, and no secrets in the logs."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from artifactd.client import ArtifactClient
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from conftest import write_random
from servers import HOST, ServerProcess, start_server

ARTIFACTS = "artifactd.v1.ArtifactService"
SECRET = "s3cr3t-bearer-token-0123456789abcdef"


class Observed:
    def __init__(self, server: ServerProcess, metrics_port: int) -> None:
        self.server = server
        self.metrics_url = f"http://{HOST}:{metrics_port}/metrics"

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:  # noqa: S310
            assert response.status == 200
            text = response.read().decode()
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        return _value(self.scrape(), name, **labels)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = [line for line in self.server.log_text().splitlines() if line.strip()]
        return [json.loads(line) for line in lines]  # every line must be JSON

    def access(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        return _eventually(
            lambda: next(
                (
                    line
                    for line in self.log_lines()
                    if line.get("logger") == "artifactd.access"
                    and line.get("request_id") == request_id
                ),
                None,
            ),
            timeout,
        )


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _eventually(probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {probe}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    base = tmp_path_factory.mktemp("observed")
    port_file = base / "metrics-port"
    server = start_server(
        base / "store", base / "run",
        "--metrics-port", "0", "--metrics-port-file", str(port_file), "--log-format", "json",
    )  # fmt: skip
    try:
        yield Observed(server, int(port_file.read_text()))
    finally:
        code = server.stop()
        assert code == 0, server.log_text()


@pytest.fixture
def raw(observed: Observed) -> Iterator[pb_grpc.ArtifactServiceStub]:
    with grpc.insecure_channel(observed.server.target) as channel:
        yield pb_grpc.ArtifactServiceStub(channel)


def test_upload_and_download_bytes_calls_and_storage_operations_are_counted(
    observed: Observed, tmp_path: Path, prefix: str
) -> None:
    size = 3 * 1024 * 1024 + 17
    local = tmp_path / "weights.bin"
    write_random(local, size)
    upload = {"service": ARTIFACTS, "method": "LogArtifact"}
    download = {"service": ARTIFACTS, "method": "DownloadArtifact"}
    before = observed.scrape()

    with ArtifactClient(observed.server.target) as client:
        client.log_artifact(local, prefix)
        back = client.download_artifacts(f"{prefix}/weights.bin", tmp_path / "back")
    assert Path(back).stat().st_size == size

    def after_both() -> Any:
        after = observed.scrape()
        done = _value(after, "artifactd_grpc_server_handled_total", **download, code="OK")
        return (
            after
            if done > _value(before, "artifactd_grpc_server_handled_total", **download, code="OK")
            else None
        )

    after = _eventually(after_both)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("artifactd_grpc_server_received_bytes_total", **upload) >= size
    assert grew("artifactd_grpc_server_received_bytes_total", **upload) < size + 64 * 1024
    assert grew("artifactd_grpc_server_sent_bytes_total", **download) >= size
    assert grew("artifactd_grpc_server_started_total", **upload, type="client_stream") == 1
    assert grew("artifactd_grpc_server_started_total", **download, type="server_stream") == 1
    assert grew("artifactd_grpc_server_handled_total", **upload, code="OK") == 1
    assert grew("artifactd_grpc_server_handled_total", **download, code="OK") == 1
    assert grew("artifactd_grpc_server_handling_seconds_count", **upload) == 1
    assert grew("artifactd_grpc_server_handling_seconds_sum", **upload) > 0
    # The storage adapter's verbs, timed on the local backend.
    local_ops = {"backend": "local"}
    assert (
        grew("artifactd_storage_operation_seconds_count", **local_ops, operation="start_upload")
        == 1
    )
    assert (
        grew("artifactd_storage_operation_seconds_count", **local_ops, operation="upload.commit")
        == 1
    )
    assert (
        grew("artifactd_storage_operation_seconds_count", **local_ops, operation="open_file") >= 1
    )
    assert (
        grew("artifactd_storage_operation_seconds_count", **local_ops, operation="reader.chunks")
        >= 1
    )
    assert (
        grew("artifactd_storage_operation_seconds_sum", **local_ops, operation="upload.commit") > 0
    )
    # No stream is left counted as running.
    assert _eventually(lambda: observed.value("artifactd_grpc_server_active_streams") == 0)


def test_failures_are_counted_by_status_code_and_storage_error(
    observed: Observed, raw: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    labels = {"service": ARTIFACTS, "method": "GetArtifact"}
    not_found = observed.value("artifactd_grpc_server_handled_total", **labels, code="NOT_FOUND")
    errors = observed.value(
        "artifactd_storage_operation_errors_total",
        backend="local",
        operation="stat",
        error="NotFound",
    )
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            raw.GetArtifact(pb.GetArtifactRequest(path=f"{prefix}/missing"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        raw.GetArtifact(pb.GetArtifactRequest(path="../escape"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert (
        observed.value("artifactd_grpc_server_handled_total", **labels, code="NOT_FOUND")
        == not_found + 2
    )
    assert (
        observed.value("artifactd_grpc_server_handled_total", **labels, code="INVALID_ARGUMENT")
        >= 1
    )
    assert (
        observed.value(
            "artifactd_storage_operation_errors_total",
            backend="local",
            operation="stat",
            error="NotFound",
        )
        == errors + 2
    )


def test_a_cancelled_download_is_counted_as_cancelled_and_its_stream_ends(
    observed: Observed, raw: pb_grpc.ArtifactServiceStub, tmp_path: Path, prefix: str
) -> None:
    local = tmp_path / "big.bin"
    write_random(local, 32 * 1024 * 1024)
    with ArtifactClient(observed.server.target) as client:
        client.log_artifact(local, prefix)
    labels = {"service": ARTIFACTS, "method": "DownloadArtifact"}
    cancelled = observed.value("artifactd_grpc_server_handled_total", **labels, code="CANCELLED")

    responses = raw.DownloadArtifact(
        pb.DownloadArtifactRequest(path=f"{prefix}/big.bin"), timeout=30
    )
    next(responses)
    assert observed.value("artifactd_grpc_server_active_streams", **labels) == 1
    responses.cancel()

    _eventually(
        lambda: (
            observed.value("artifactd_grpc_server_handled_total", **labels, code="CANCELLED")
            == cancelled + 1
        )
    )
    _eventually(lambda: observed.value("artifactd_grpc_server_active_streams", **labels) == 0)


def test_an_expired_deadline_is_counted_as_deadline_exceeded(
    observed: Observed, raw: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    labels = {"service": ARTIFACTS, "method": "LogArtifact"}
    expired = observed.value(
        "artifactd_grpc_server_handled_total", **labels, code="DEADLINE_EXCEEDED"
    )

    def stalled() -> Iterator[pb.LogArtifactRequest]:
        yield pb.LogArtifactRequest(header=pb.UploadHeader(path=f"{prefix}/slow.bin"))
        yield pb.LogArtifactRequest(data=b"x" * 1000)
        time.sleep(3)  # the deadline passes while the server waits for more

    with pytest.raises(grpc.RpcError) as caught:
        raw.LogArtifact(stalled(), timeout=1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _eventually(
        lambda: (
            observed.value(
                "artifactd_grpc_server_handled_total", **labels, code="DEADLINE_EXCEEDED"
            )
            == expired + 1
        )
    )
    _eventually(lambda: observed.value("artifactd_grpc_server_active_streams", **labels) == 0)


def test_open_resumable_upload_sessions_are_a_gauge(
    observed: Observed, raw: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    name = "artifactd_upload_sessions_open"
    assert observed.value(name, kind="multipart") >= 0  # both kinds are always exported
    before = observed.value(name, kind="resumable")
    started = raw.StartResumableUpload(
        pb.StartResumableUploadRequest(path=f"{prefix}/resumed.bin", size=10), timeout=10
    )
    assert started.upload_id
    assert observed.value(name, kind="resumable") == before + 1


def test_access_log_is_json_with_the_request_id_echoed_and_no_secrets(
    observed: Observed, raw: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    request_id = f"req-{prefix}"
    with pytest.raises(grpc.RpcError) as caught:
        raw.GetArtifact.with_call(
            pb.GetArtifactRequest(path=f"{prefix}/nothing/here.txt"),
            metadata=(("x-request-id", request_id), ("authorization", f"Bearer {SECRET}")),
            timeout=10,
        )
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", request_id) in tuple(error.initial_metadata())  # type: ignore[attr-defined]
    assert ("x-request-id", request_id) in tuple(error.trailing_metadata())  # type: ignore[attr-defined]

    line = observed.access(request_id)
    assert line["level"] == "INFO"
    assert line["method"] == f"/{ARTIFACTS}/GetArtifact"
    assert line["path"] == f"{prefix}/nothing/here.txt"
    assert line["code"] == "NOT_FOUND"
    assert line["principal"] == ""  # authentication is off
    assert line["bytes_in"] > len(prefix)
    assert line["bytes_out"] == 0
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert {"ts", "logger", "message", "peer"} <= line.keys()
    log_text = observed.server.log_text()
    assert SECRET not in log_text
    assert "authorization" not in log_text.lower()


def test_a_successful_call_and_an_upload_are_logged_with_path_and_bytes(
    observed: Observed, raw: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    data = b"0123456789" * 5000

    def messages() -> Iterator[pb.LogArtifactRequest]:
        yield pb.LogArtifactRequest(header=pb.UploadHeader(path=f"{prefix}/a/b.txt"))
        for start in range(0, len(data), 16384):
            yield pb.LogArtifactRequest(data=data[start : start + 16384])
        yield pb.LogArtifactRequest(finish=pb.UploadFinish())

    response, call = raw.LogArtifact.with_call(
        messages(),
        metadata=(("x-request-id", f"up-{prefix}"), ("authorization", f"Bearer {SECRET}")),
        timeout=10,
    )
    assert response.file.file_size == len(data)
    assert ("x-request-id", f"up-{prefix}") in tuple(call.trailing_metadata())
    line = observed.access(f"up-{prefix}")
    assert line["method"] == f"/{ARTIFACTS}/LogArtifact"
    assert line["path"] == f"{prefix}/a/b.txt"  # from the header of the client stream
    assert line["code"] == "OK"
    assert len(data) <= line["bytes_in"] < len(data) + 1024
    assert line["bytes_out"] == response.ByteSize()
    assert "0123456789" not in observed.server.log_text()  # chunk data is never logged
    assert SECRET not in observed.server.log_text()


def test_an_insane_request_id_is_replaced_by_a_generated_one(
    observed: Observed, raw: pb_grpc.ArtifactServiceStub
) -> None:
    _, call = raw.GetCapabilities.with_call(
        pb.GetCapabilitiesRequest(),
        metadata=(("x-request-id", "bad id, with spaces and $" * 10),),
        timeout=10,
    )
    echoed = dict(call.initial_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    assert dict(call.trailing_metadata())["x-request-id"] == echoed
    assert observed.access(echoed)["method"] == f"/{ARTIFACTS}/GetCapabilities"

    _, call = raw.GetCapabilities.with_call(pb.GetCapabilitiesRequest(), timeout=10)
    generated = dict(call.initial_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated) and generated != echoed


def test_every_server_log_record_is_a_json_line(observed: Observed) -> None:
    lines = observed.log_lines()  # raises on a line that is not JSON
    assert any("listening on" in line["message"] for line in lines)
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)


_STALE_COUNTER = """
from prometheus_client import CollectorRegistry, Counter
Counter("artifactd_grpc_server_started_total", "stale", ["service", "method", "type"],
        registry=CollectorRegistry()).labels("artifactd.v1.ArtifactService", "GetCapabilities",
        "unary").inc(1_000_000)
"""


def _started_in(path: Path) -> float:
    """GetCapabilities calls counted in one worker's multiprocess file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return sum(
        sample.value
        for family in MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
        for sample in family.samples
        if sample.name == "artifactd_grpc_server_started_total"
        and sample.labels.get("method") == "GetCapabilities"
    )


def test_workers_metrics_add_up_at_the_one_scrape_port(tmp_path: Path) -> None:
    """`--workers 2`: calls served by both workers are counted once each at the supervisor's
    port (a leftover file of an earlier run in PROMETHEUS_MULTIPROC_DIR is wiped, not added),
    and the replica is named by artifactd_replica_info."""
    import subprocess
    import sys

    metrics_dir = tmp_path / "multiproc"
    metrics_dir.mkdir()
    subprocess.run(
        [sys.executable, "-c", _STALE_COUNTER],
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert _started_in(next(metrics_dir.glob("counter_*.db"))) == 1_000_000
    metrics_file = tmp_path / "metrics-port"
    server = start_server(
        tmp_path / "root", tmp_path / "run", "--workers", "2", "--metrics-port", "0",
        "--metrics-port-file", str(metrics_file), "--replica-name", "replica-a",
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, timeout=60,
    )  # fmt: skip
    try:
        observed = Observed(server, int(metrics_file.read_text()))
        calls = 0
        per_worker: dict[str, float] = {}
        while calls < 200 and (len(per_worker) < 2 or not all(per_worker.values())):
            for _ in range(10):  # each channel is a new connection, which the kernel spreads
                with grpc.insecure_channel(server.target) as channel:
                    stub = pb_grpc.ArtifactServiceStub(channel)
                    stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
                calls += 1
            per_worker = {p.name: _started_in(p) for p in metrics_dir.glob("counter_*.db")}
        assert len(per_worker) == 2 and all(per_worker.values()), (
            f"both workers should have served some of {calls} calls: {per_worker}"
        )
        assert sum(per_worker.values()) == calls
        started = observed.value(
            "artifactd_grpc_server_started_total", service=ARTIFACTS, method="GetCapabilities"
        )
        assert started == calls, f"the scrape shows {started}, the workers served {calls}"
        assert observed.value("artifactd_replica_info", replica="replica-a") == 1
        assert observed.value("artifactd_grpc_server_active_streams") == 0
    finally:
        assert server.stop() == 0, server.log_text()
