"""Health, reflection, graceful shutdown and bounded memory of a real server process."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from conftest import visible_files
from servers import ServerProcess, start_server

MiB = 1024 * 1024
SERVICE = "artifactd.v1.ArtifactService"


def slow_upload(
    path: str, chunks: int, pause: float, started: threading.Event
) -> Iterator[pb.LogArtifactRequest]:
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path, size=chunks * 1024))
    started.set()
    for _ in range(chunks):
        time.sleep(pause)
        yield pb.LogArtifactRequest(data=b"z" * 1024)
    yield pb.LogArtifactRequest(finish=pb.UploadFinish())


def test_health_and_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(reflect.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_graceful_shutdown_lets_transfers_finish(tmp_path: Path) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run", "--grace-period", "20")
    statuses: list[int] = []
    try:
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
            statuses.append(next(watch).status)

            def watch_rest() -> None:
                with contextlib.suppress(grpc.RpcError):
                    statuses.extend(m.status for m in watch)

            watcher = threading.Thread(target=watch_rest, daemon=True)
            watcher.start()
            stub = pb_grpc.ArtifactServiceStub(channel)
            started = threading.Event()
            future = stub.LogArtifact.future(
                slow_upload("in/flight.bin", 30, 0.1, started), timeout=30
            )
            assert started.wait(10)
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with grpc.insecure_channel(server.target) as fresh:
                with pytest.raises(grpc.RpcError) as err:
                    pb_grpc.ArtifactServiceStub(fresh).GetCapabilities(
                        pb.GetCapabilitiesRequest(), timeout=2
                    )
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (
                    "no new calls while draining"
                )
            reply = future.result(timeout=30)
            assert reply.file.file_size == 30 * 1024
            t_drained = time.monotonic()
            assert server.process.wait(30) == 0
            assert time.monotonic() - t_drained < 5, "an open health Watch must not hold the drain"
            watcher.join(5)
    finally:
        server.stop(signal.SIGKILL)
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses, statuses
    assert (tmp_path / "store" / "in" / "flight.bin").stat().st_size == 30 * 1024


def test_transfers_past_the_grace_period_publish_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run", "--grace-period", "1")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            started = threading.Event()
            future = stub.LogArtifact.future(slow_upload("late.bin", 100, 0.1, started), timeout=30)
            assert started.wait(10)
            time.sleep(0.5)  # the call is running on the server
            t0 = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as err:
                reply = future.result(timeout=20)
                pytest.fail(f"an upload cut off by shutdown must not succeed: {reply}")
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), (
                err.value
            )
            assert server.process.wait(20) == 0
            assert time.monotonic() - t0 < 10
    finally:
        server.stop(signal.SIGKILL)
    assert visible_files(tmp_path / "store") == []


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_concurrent_large_uploads_use_bounded_memory(tmp_path: Path) -> None:
    """4 concurrent 512 MiB uploads (2 GiB in flight) must not hold their bytes in server memory.

    Messages of the client's size (256 KiB). The bound is well under the bytes in flight but above
    what gRPC's receive buffering may take when four senders in one process outrun the server
    (up to ~400 MB seen here); the issue's 300 MB target for 4 x 1 GiB is measured by bench/.
    """
    server = start_server(tmp_path / "store", tmp_path / "run", "--no-fsync")
    block = bytes(range(256)) * 1024  # 256 KiB, one object reused: the client side stays small
    size = 512 * MiB
    try:
        before = _peak_rss_mb(server.process.pid)

        def one(i: int) -> int:
            def messages() -> Iterator[pb.LogArtifactRequest]:
                yield pb.LogArtifactRequest(header=pb.UploadHeader(path=f"big/{i}.bin", size=size))
                for _ in range(size // len(block)):
                    yield pb.LogArtifactRequest(data=block)
                yield pb.LogArtifactRequest(finish=pb.UploadFinish())

            with grpc.insecure_channel(
                server.target, options=[("grpc.max_send_message_length", 16 * MiB)]
            ) as channel:
                return (
                    pb_grpc.ArtifactServiceStub(channel)
                    .LogArtifact(messages(), timeout=120)
                    .file.file_size
                )  # type: ignore[no-any-return]

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(one, range(4))) == [size] * 4
        peak = _peak_rss_mb(server.process.pid)
    finally:
        assert server.stop() == 0
    assert peak < 600, (
        f"server peak RSS {peak:.0f} MB (started at {before:.0f} MB) for 2 GiB in flight"
    )
