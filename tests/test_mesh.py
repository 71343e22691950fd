"""What a mesh relies on, against real server processes: several workers sharing one port,
draining under load, the drain delay, the limit on concurrent calls, and connection age.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from servers import ServerProcess, start_server

CHUNK = 256 * 1024


def slow_upload(path: str, chunks: int, pause: float) -> Iterator[pb.LogArtifactRequest]:
    """An upload that stays in flight for about `chunks * pause` seconds."""
    digest = hashlib.sha256()
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path, size=chunks * CHUNK))
    for index in range(chunks):
        data = bytes([index % 251]) * CHUNK
        digest.update(data)
        yield pb.LogArtifactRequest(data=data)
        time.sleep(pause)
    yield pb.LogArtifactRequest(finish=pb.UploadFinish(sha256=digest.hexdigest()))


def metric_sum(metrics_port: int, name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        int(float(value)) for value in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    )


def started_calls(metrics_port: int) -> int:
    return metric_sum(metrics_port, "artifactd_grpc_server_started_total")


def wait_in_flight(metrics_ports: list[int], count: int, timeout: float = 20.0) -> None:
    """Until the servers report `count` streams running (a loaded machine starts calls late)."""
    deadline = time.monotonic() + timeout
    while True:
        running = sum(
            metric_sum(port, "artifactd_grpc_server_active_streams") for port in metrics_ports
        )
        if running >= count:
            return
        assert time.monotonic() < deadline, f"only {running} of {count} calls started"
        time.sleep(0.02)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    metrics_file = tmp_path / "metrics-port"
    server = start_server(
        tmp_path / "store", tmp_path / "run", "--workers", "2", "--metrics-port", "0",
        "--metrics-port-file", str(metrics_file),
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc")},
    )  # fmt: skip
    yield server, metrics_file
    server.stop()


def started_per_worker(metrics_dir: Path) -> list[float]:
    """Calls started, per worker, from the workers' multiprocess files."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return [
        sum(
            sample.value
            for family in MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
            for sample in family.samples
            if sample.name == "artifactd_grpc_server_started_total"
        )
        for path in sorted(metrics_dir.glob("counter_*.db"))
    ]


def test_workers_share_one_port_and_drain_together_under_load(
    workers: tuple[ServerProcess, Path],
) -> None:
    server, metrics_file = workers
    ports = [int(metrics_file.read_text())]  # the supervisor's: every worker's metrics
    for _ in range(24):  # each channel is a new connection, which the kernel spreads
        with grpc.insecure_channel(server.target) as channel:
            pb_grpc.ArtifactServiceStub(channel).GetCapabilities(pb.GetCapabilitiesRequest())
    counts = started_per_worker(metrics_file.parent / "multiproc")
    assert len(counts) == 2 and all(counts), f"one worker served everything: {counts}"
    assert started_calls(ports[0]) == sum(counts) >= 24  # and the start-up health checks

    channels = [grpc.insecure_channel(server.target) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            uploads = [
                pool.submit(
                    pb_grpc.ArtifactServiceStub(channel).LogArtifact,
                    slow_upload(f"drain/{i}.bin", 12, 0.15),
                    timeout=60,
                )
                for i, channel in enumerate(channels)
            ]
            wait_in_flight(ports, 4)
            server.process.send_signal(signal.SIGTERM)
            results = [future.result() for future in uploads]
        assert [r.file.file_size for r in results] == [12 * CHUNK] * 4
        assert server.process.wait(60) == 0, server.log_text()
    finally:
        for channel in channels:
            channel.close()
    stored = sorted((server.root / "drain").iterdir())
    assert [p.name for p in stored] == ["0.bin", "1.bin", "2.bin", "3.bin"]
    for port in ports:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_worker_that_cannot_start_stops_the_others(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("not toml [")
    with pytest.raises(RuntimeError, match="exited with 1"):
        start_server(
            tmp_path / "store", tmp_path / "run", "--workers", "2",
            "--auth-tokens-file", str(tokens), timeout=60,
        )  # fmt: skip


def test_the_drain_delay_reports_not_serving_while_still_answering(tmp_path: Path) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run", "--drain-delay", "3")
    try:
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            artifacts = pb_grpc.ArtifactServiceStub(channel)
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 2
            while True:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                assert time.monotonic() < deadline, "health never flipped to NOT_SERVING"
                time.sleep(0.05)
            artifacts.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=2)  # still answered
            assert server.process.poll() is None
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def test_calls_beyond_the_concurrency_limit_are_refused(tmp_path: Path) -> None:
    metrics_file = tmp_path / "metrics-port"
    server = start_server(
        tmp_path / "store", tmp_path / "run", "--max-concurrent-rpcs", "1", "--metrics-port",
        "0", "--metrics-port-file", str(metrics_file),
    )  # fmt: skip
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            holding = stub.LogArtifact.future(slow_upload("held.bin", 12, 0.15), timeout=30)
            wait_in_flight([int(metrics_file.read_text())], 1)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert holding.result().file.file_size == 12 * CHUNK
            stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)  # free again
    finally:
        assert server.stop() == 0


def test_connection_age_grace_lets_long_uploads_finish(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "store", tmp_path / "run", "--max-connection-age", "1",
        "--max-connection-age-grace", "30",
    )  # fmt: skip
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            done = stub.LogArtifact(slow_upload("long.bin", 16, 0.2), timeout=60)  # ~3 s
            assert done.file.file_size == 16 * CHUNK
            time.sleep(1.5)  # the old connection has aged out: the channel reconnects
            stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
    finally:
        assert server.stop() == 0


def test_a_connection_past_its_age_and_grace_is_cut_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    server = start_server(
        tmp_path / "store", tmp_path / "run", "--max-connection-age", "1",
        "--max-connection-age-grace", "1",
    )  # fmt: skip
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            with pytest.raises(grpc.RpcError) as cut:
                stub.LogArtifact(slow_upload("cut.bin", 30, 0.2), timeout=60)  # ~6 s
            assert cut.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
        time.sleep(0.5)
        assert not (server.root / "cut.bin").exists()
        # nothing but the running server's owner mark (see storage/owners.py)
        owners = server.root / ".artifactd-owners"
        assert not [p for p in server.root.rglob("*") if p.is_file() and owners not in p.parents]
    finally:
        assert server.stop() == 0


def test_server_keepalive_settings_reach_the_server(tmp_path: Path) -> None:
    """The flags parse and a server with short keepalives serves an idle channel's next call."""
    server = start_server(
        tmp_path / "store", tmp_path / "run", "--keepalive-time", "1", "--keepalive-timeout",
        "5", "--max-concurrent-streams", "8", "--max-connection-idle", "2",
    )  # fmt: skip
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
            time.sleep(3)  # idle past --max-connection-idle: the server closes, gRPC reconnects
            stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
        log = server.log_text()
        assert "Traceback" not in log
    finally:
        assert server.stop() == 0


def test_eight_parallel_uploads_through_two_workers(tmp_path: Path) -> None:
    """Every upload lands whichever worker the kernel gave its connection to."""
    server = start_server(tmp_path / "store", tmp_path / "run", "--workers", "2")
    try:
        errors: list[BaseException] = []

        def one(index: int) -> None:
            try:
                with grpc.insecure_channel(server.target) as channel:
                    pb_grpc.ArtifactServiceStub(channel).LogArtifact(
                        slow_upload(f"many/{index}.bin", 8, 0.01), timeout=60
                    )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert len(os.listdir(server.root / "many")) == 8
    finally:
        assert server.stop() == 0
