"""Issue 19: what a hostile or unlucky client found, each case against a real server process.

Descriptors and temporary files after every way out of an upload, a full disk in both I/O
modes, undecodable requests, GetDownloadUrl's path, a batch ordered like one-by-one uploads,
long invalid values quoted short, enum and size checks, crash leftovers, a lost answer after a
published upload, and idle connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifactd.client import ArtifactClient
from artifactd.protocol.errors import ResourceExhausted
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from waiting import wait_for

from conftest import temp_upload_files, write_random
from servers import ServerProcess, start_server
from small_disk import fill

MiB = 1024 * 1024
Stub = pb_grpc.ArtifactServiceStub


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def temp_files(root: Path) -> list[str]:
    return temp_upload_files(root)


def header(path: str, size: int | None, **fields: Any) -> pb.UploadHeader:
    return pb.UploadHeader(path=path, **({"size": size} if size is not None else {}), **fields)


def finish(data: bytes = b"") -> pb.UploadFinish:
    return pb.UploadFinish(sha256=hashlib.sha256(data).hexdigest())


def one_file(path: str, data: bytes, request: type[Any] = pb.LogArtifactRequest) -> list[Any]:
    """The messages of one file's upload, as LogArtifact (or `request`) messages."""
    return [request(header=header(path, len(data)), data=data), request(finish=finish(data))]


Batch = pb.LogArtifactsRequest


def status_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return,attr-defined]
    return grpc.StatusCode.OK


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path / "store", tmp_path / "run")
    yield server
    assert server.stop() == 0, server.log_text()


# -- 1. every way out of an upload releases its descriptor and temporary file ----------------


def _held(messages: list[pb.LogArtifactRequest], release: threading.Event) -> Iterator[Any]:
    """The messages, then a wait: the stream stays open, mid-file, until `release`."""
    yield from messages
    release.wait(30)


def _exit_paths(stub: Stub, root: Path, big: bytes) -> dict[str, Callable[[int], None]]:
    stub.LogArtifact(iter(one_file("x/plain", b"p")), timeout=30)

    def data_after_finish(i: int) -> None:
        extra = [pb.LogArtifactRequest(data=b"y")]
        code = status_of(lambda: stub.LogArtifact(iter(one_file(f"x/a{i}", b"x") + extra)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT

    def second_header(i: int) -> None:
        both = one_file(f"x/b{i}", b"1") + one_file(f"x/c{i}", b"2")
        assert status_of(lambda: stub.LogArtifact(iter(both))) == grpc.StatusCode.INVALID_ARGUMENT

    def large_data_after_finish(i: int) -> None:  # direct I/O and the writer thread
        messages = [
            pb.LogArtifactRequest(header=header(f"x/big{i}", len(big))),
            *(
                pb.LogArtifactRequest(data=big[o : o + 256 * 1024])
                for o in range(0, len(big), 256 * 1024)
            ),
            pb.LogArtifactRequest(finish=finish(big)),
            pb.LogArtifactRequest(data=b"y"),
        ]
        assert status_of(lambda: stub.LogArtifact(iter(messages))) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )

    def header_twice(i: int) -> None:
        messages = [
            pb.LogArtifactRequest(header=header(f"x/d{i}", 2), data=b"1"),
            pb.LogArtifactRequest(header=header(f"x/e{i}", 1), data=b"2"),
        ]
        code = status_of(lambda: stub.LogArtifact(iter(messages)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT

    def wrong_checksum(i: int) -> None:
        messages = [
            pb.LogArtifactRequest(header=header(f"x/f{i}", 1), data=b"1"),
            pb.LogArtifactRequest(finish=finish(b"other")),
        ]
        assert status_of(lambda: stub.LogArtifact(iter(messages))) == grpc.StatusCode.DATA_LOSS

    def storage_refuses(i: int) -> None:  # a file where a parent directory must go
        messages = one_file(f"x/plain/under-{i}", b"1")
        code = status_of(lambda: stub.LogArtifact(iter(messages)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION

    def batch_then_violation(i: int) -> None:
        messages = [
            *one_file(f"x/g{i}", b"1", Batch),
            *one_file(f"x/h{i}", b"2", Batch),
            Batch(data=b"3"),
        ]
        code = status_of(lambda: stub.LogArtifacts(iter(messages)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT

    def mid_file(i: int, end: Callable[[grpc.Future, threading.Event], None], **kw: Any) -> None:
        release = threading.Event()
        before = set(temp_files(root))
        first = [pb.LogArtifactRequest(header=header(f"x/m{i}", 10), data=b"12345")]
        future = stub.LogArtifact.future(_held(first, release), **kw)
        assert wait_for(lambda: set(temp_files(root)) - before, 10), "the upload never started"
        end(future, release)
        with contextlib.suppress(grpc.RpcError, grpc.FutureCancelledError):
            future.result()
        release.set()

    def cancelled(i: int) -> None:
        mid_file(i, lambda future, release: future.cancel())

    def deadline(i: int) -> None:
        mid_file(i, lambda future, release: wait_for(future.done, 10), timeout=1.0)

    return {
        "data after finish": data_after_finish,
        "second header": second_header,
        "header before finish": header_twice,
        "wrong checksum": wrong_checksum,
        "storage refuses": storage_refuses,
        "batch then violation": batch_then_violation,
        "large data after finish": large_data_after_finish,
        "client cancels": cancelled,
        "deadline passes": deadline,
    }


def test_every_exit_of_an_upload_releases_its_descriptor_and_temp_file(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    root = own_server.root
    pid = own_server.process.pid
    big = os.urandom(9 * MiB)
    rounds = {"large data after finish": 3, "client cancels": 10, "deadline passes": 5}
    with grpc.insecure_channel(own_server.target) as channel:
        stub = pb_grpc.ArtifactServiceStub(channel)
        paths = _exit_paths(stub, root, big)
        for run in paths.values():  # warm-up: gRPC's own threads and descriptors
            run(0)
        assert wait_for(lambda: not temp_files(root))
        baseline = open_fds(pid)
        calls = 0
        for name, run in paths.items():
            for i in range(1, rounds.get(name, 30) + 1):
                run(i)
                calls += 1
        # the disconnect: a channel closed while its upload is mid-file
        for i in range(5):
            side = grpc.insecure_channel(own_server.target)
            release = threading.Event()
            first = [pb.LogArtifactRequest(header=header(f"x/n{i}", 10), data=b"12345")]
            before = set(temp_files(root))
            future = pb_grpc.ArtifactServiceStub(side).LogArtifact.future(_held(first, release))
            assert wait_for(lambda before=before: set(temp_files(root)) - before, 10)  # type: ignore[misc]
            side.close()
            release.set()
            with contextlib.suppress(grpc.RpcError, grpc.FutureCancelledError):
                future.result()
            calls += 1
        assert calls > 200
        leftover = wait_for(lambda: not temp_files(root) and open_fds(pid) <= baseline + 2)
        assert leftover, (
            f"after {calls} failed uploads: {len(temp_files(root))} temp files, "
            f"{open_fds(pid)} descriptors (baseline {baseline})"
        )
        # and the server still works
        reply = stub.LogArtifact(iter(one_file("x/after", b"ok")), timeout=30)
        assert reply.file.file_size == 2


# -- 2. a full disk is RESOURCE_EXHAUSTED with direct I/O and without ------------------------


def _filling_upload(
    root: Path, path: str, size: int, request: type[Any], before: list[Any]
) -> Iterator[Any]:
    """`before`, then one file of `size` bytes that fills the disk once the server has written
    past the direct-I/O threshold (8 MiB): its next write hits ENOSPC."""
    yield from before
    data = os.urandom(256 * 1024)
    yield request(header=header(path, size), data=data)
    sent = len(data)
    filled = False
    while sent < size:
        if not filled and sent >= 12 * MiB:
            wait_for(lambda: any(os.path.getsize(t) > 8 * MiB for t in temp_files(root)), 10)
            fill(root)
            filled = True
        yield request(data=data)
        sent += len(data)
    yield request(finish=pb.UploadFinish())


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct-io", "no-direct-io"])
def test_a_full_disk_is_resource_exhausted_and_leaves_nothing(
    small_disk: Path, tmp_path: Path, direct_io: bool
) -> None:
    root = small_disk / "store"
    args = [] if direct_io else ["--no-direct-io"]
    server = start_server(root, tmp_path / "run", *args)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            stub.LogArtifact(iter(one_file("earlier.bin", b"kept")), timeout=30)
            with pytest.raises(grpc.RpcError) as caught:
                stub.LogArtifact(
                    _filling_upload(root, "big.bin", 24 * MiB, pb.LogArtifactRequest, []),
                    timeout=60,
                )
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, server.log_text()
            assert "no space left" in caught.value.details()
            assert wait_for(lambda: not temp_files(root))
            os.unlink(root / "filler")
            first = one_file("batch/ok.bin", b"ok", Batch)
            reply = stub.LogArtifacts(
                _filling_upload(root, "batch/big.bin", 24 * MiB, pb.LogArtifactsRequest, first),
                timeout=60,
            )
            codes = [(r.path, r.code) for r in reply.results]
            exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert codes == [("batch/ok.bin", 0), ("batch/big.bin", exhausted)]
            assert "no space left" in reply.results[1].message
            assert wait_for(lambda: not temp_files(root))
        assert (root / "earlier.bin").read_bytes() == b"kept"
        assert (root / "batch/ok.bin").read_bytes() == b"ok"
        assert not (root / "big.bin").exists() and not (root / "batch/big.bin").exists()
        assert "BufferError" not in server.log_text()
        assert "Traceback" not in server.log_text()
    finally:
        assert server.stop() == 0


def test_a_full_local_disk_fails_a_download_cleanly(
    server: ServerProcess, prefix: str, small_disk: Path, tmp_path: Path
) -> None:
    local = tmp_path / "model.bin"
    write_random(local, 24 * MiB)
    with ArtifactClient(server.target) as client:
        client.log_artifact(local, prefix)
        st = os.statvfs(small_disk)
        with open(small_disk / "filler", "wb") as fh:  # 12 MiB stay free: past the 8 MiB switch
            fh.write(b"\0" * (st.f_bavail * st.f_frsize - 12 * MiB))
        with pytest.raises(ResourceExhausted, match="no space left"):
            client.download_artifacts(f"{prefix}/model.bin", dst_path=str(small_disk / "dst"))
    leftovers = [p for p in (small_disk / "dst").rglob("*") if p.is_file()]
    assert leftovers == []


# -- 3. undecodable requests and undefined enum values --------------------------------------


def _raw(channel: grpc.Channel, method: str, streaming: bool = False) -> Callable[..., Any]:
    if streaming:
        return channel.stream_unary(method, request_serializer=None, response_deserializer=None)
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


BAD_UTF8_PATH = b"\x0a\x03a\xff\xfe"  # field 1 (path), 3 bytes of invalid UTF-8
CASES = {
    "GetArtifact path": ("/artifactd.v1.ArtifactService/GetArtifact", BAD_UTF8_PATH),
    "ListArtifacts page_token": (
        "/artifactd.v1.ArtifactService/ListArtifacts",
        b"\x22\x02\xc3\x28",  # field 4 (page_token)
    ),
    "DeleteArtifacts garbage": ("/artifactd.v1.ArtifactService/DeleteArtifacts", b"\xff" * 12),
    "GetRun run_id": ("/artifactd.v1.RunService/GetRun", b"\x0a\x02\xed\xa0"),
}


@pytest.fixture
def metered_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    port_file = tmp_path / "metrics-port"
    server = start_server(
        tmp_path / "store", tmp_path / "run",
        "--metrics-port", "0", "--metrics-port-file", str(port_file),
    )  # fmt: skip
    assert wait_for(port_file.exists)
    yield server, int(port_file.read_text())
    assert server.stop() == 0


def undecodable_count(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("artifactd_undecodable_requests_total{")
    )


def test_undecodable_requests_are_invalid_argument_without_a_traceback(
    metered_server: tuple[ServerProcess, int],
) -> None:
    server, metrics_port = metered_server
    with grpc.insecure_channel(server.target) as channel:
        for name, (method, body) in CASES.items():
            with pytest.raises(grpc.RpcError) as caught:
                _raw(channel, method)(body, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "could not be decoded" in caught.value.details(), name
        upload = _raw(channel, "/artifactd.v1.ArtifactService/LogArtifact", streaming=True)
        good = pb.LogArtifactRequest(header=header("u/ok.bin", 1), data=b"1").SerializeToString()
        with pytest.raises(grpc.RpcError) as caught:
            upload(iter([good, b"\xff\xff\xff"]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert undecodable_count(metrics_port) == len(CASES) + 1
    log = server.log_text()
    assert "Exception deserializing" not in log and "Traceback" not in log
    assert wait_for(lambda: not temp_files(server.root))


def test_an_undefined_enum_value_is_invalid_argument(stub: Stub, prefix: str) -> None:
    messages = [
        pb.LogArtifactRequest(
            header=header(f"{prefix}/e.bin", 1, overwrite=99),  # type: ignore[arg-type]
            data=b"1",
        ),
        pb.LogArtifactRequest(finish=finish(b"1")),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        stub.LogArtifact(iter(messages), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "overwrite has the undefined value 99" in caught.value.details()


# -- 4. every RPC with a path field checks it -----------------------------------------------


def _path_methods() -> list[tuple[str, str, Any, bool, bool]]:
    """(service, method, request type, request streaming, response streaming) of every RPC
    whose request carries a path, at the top or in its upload header."""
    found = []
    for module in (pb, rpb):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                fields = method.input_type.fields_by_name
                header_type = fields["header"].message_type if "header" in fields else None
                if "path" in fields or (header_type and "path" in header_type.fields_by_name):
                    found.append((
                        service.full_name, method.name, method.input_type,
                        method.client_streaming, method.server_streaming,
                    ))  # fmt: skip
    return found


def _invoke(
    channel: grpc.Channel, full: str, body: bytes, client_streaming: bool, server_streaming: bool
) -> Any:
    if client_streaming:
        finished = pb.LogArtifactRequest(finish=finish(b"1")).SerializeToString()
        return channel.stream_unary(full, None, None)(iter([body, finished]), timeout=30)
    if server_streaming:
        return list(channel.unary_stream(full, None, None)(body, timeout=30))
    return channel.unary_unary(full, None, None)(body, timeout=30)


@pytest.mark.parametrize(
    "bad", ["../escape", "a/%2e%2e/b", "x" * 2 * MiB], ids=["dotdot", "encoded", "2MB"]
)
def test_every_rpc_with_a_path_refuses_a_bad_one(server: ServerProcess, bad: str) -> None:
    methods = _path_methods()
    names = {name for _, name, *_ in methods}
    assert {"GetDownloadUrl", "LogArtifact", "DownloadArtifact", "DeleteArtifacts"} <= names
    from google.protobuf import message_factory

    with grpc.insecure_channel(server.target) as channel:
        for service, name, input_type, client_streaming, server_streaming in methods:
            request_class = message_factory.GetMessageClass(input_type)
            if "header" in input_type.fields_by_name:
                request = request_class(header=header(bad, 1), data=b"1")
            else:
                request = request_class(path=bad)
                if "size" in input_type.fields_by_name:
                    request.size = 10
            full = f"/{service}/{name}"
            body = request.SerializeToString()
            try:
                reply = _invoke(channel, full, body, client_streaming, server_streaming)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, exc.details())
                assert len(exc.details()) < 2100, name
                continue
            assert name == "LogArtifacts", f"{name} accepted {bad[:20]!r}"
            result = pb.LogArtifactsResponse.FromString(reply).results[0]
            assert result.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert len(result.path) < 300 and len(result.message) < 2100


def test_get_download_url_answers_like_every_other_path_rpc(stub: Stub, prefix: str) -> None:
    missing = pb.GetDownloadUrlRequest(path=f"{prefix}/missing.bin")
    assert status_of(lambda: stub.GetDownloadUrl(missing, timeout=30)) == grpc.StatusCode.NOT_FOUND
    stub.LogArtifact(iter(one_file(f"{prefix}/d/f.bin", b"1")), timeout=30)
    directory = pb.GetDownloadUrlRequest(path=f"{prefix}/d")
    code = status_of(lambda: stub.GetDownloadUrl(directory, timeout=30))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    found = stub.GetDownloadUrl(pb.GetDownloadUrlRequest(path=f"{prefix}/d/f.bin"), timeout=30)
    assert not found.supported  # local disk: download through the server


# -- 5. a batch stores what the same uploads one by one store -------------------------------


def test_a_batch_publishes_a_file_before_one_below_it(
    stub: Stub, server: ServerProcess, prefix: str
) -> None:
    for attempt in range(5):
        base = f"{prefix}/{attempt}"
        messages = [*one_file(f"{base}/f", b"1", Batch), *one_file(f"{base}/f/g", b"2", Batch)]
        results = stub.LogArtifacts(iter(messages), timeout=30).results
        assert [r.code for r in results] == [0, grpc.StatusCode.FAILED_PRECONDITION.value[0]]
        assert (server.root / base / "f").read_bytes() == b"1"
    # the other order: f/g stored, f refused, as one by one
    messages = [*one_file(f"{prefix}/o/f/g", b"2", Batch), *one_file(f"{prefix}/o/f", b"1", Batch)]
    results = stub.LogArtifacts(iter(messages), timeout=30).results
    assert [r.code for r in results] == [0, grpc.StatusCode.FAILED_PRECONDITION.value[0]]


# -- 6 and 7. short quotes, clear messages, sizes refused at the start ----------------------


def test_a_huge_invalid_path_is_quoted_short(stub: Stub) -> None:
    huge = "a" * (10 * 1000 * 1000)
    messages = one_file(huge, b"1", Batch)
    reply = stub.LogArtifacts(iter(messages), timeout=60)  # a 4 MiB client limit suffices
    assert reply.ByteSize() < 1000
    assert (
        reply.results[0].path.startswith("aaaa") and "10000000 characters" in reply.results[0].path
    )


def test_messages_name_the_actual_problem(stub: Stub, prefix: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteArtifacts(pb.DeleteArtifactsRequest(path=f"{prefix}/../x"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "root itself" not in caught.value.details()
    assert "'..'" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteArtifacts(pb.DeleteArtifactsRequest(path=""), timeout=30)
    assert "root itself cannot be deleted" in caught.value.details()


def test_sizes_that_cannot_be_stored_are_refused_at_the_start(stub: Stub, prefix: str) -> None:
    capabilities = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=30)
    assert capabilities.max_artifact_size == 5 * 1024**4
    start = pb.StartResumableUploadRequest(path=f"{prefix}/r.bin", size=2**63 - 1)
    with pytest.raises(grpc.RpcError) as caught:
        stub.StartResumableUpload(start, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "largest artifact" in caught.value.details()
    # this disk has less than 5 TiB free: refused as out of space before any byte is sent
    start = pb.StartResumableUploadRequest(path=f"{prefix}/r.bin", size=5 * 1024**4)
    with pytest.raises(grpc.RpcError) as caught:
        stub.StartResumableUpload(start, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "no space left" in caught.value.details()
    header_only = [pb.LogArtifactRequest(header=header(f"{prefix}/h.bin", 5 * 1024**4))]
    code = status_of(lambda: stub.LogArtifact(iter(header_only), timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- 8. crash leftovers and a lost answer ---------------------------------------------------


def _open_upload(target: str, path: str) -> tuple[grpc.Channel, threading.Event, grpc.Future]:
    channel = grpc.insecure_channel(target)
    release = threading.Event()
    first = [pb.LogArtifactRequest(header=header(path, 10), data=b"12345")]
    future = pb_grpc.ArtifactServiceStub(channel).LogArtifact.future(_held(first, release))
    return channel, release, future


def test_a_restart_removes_dead_owners_temp_files_and_no_live_ones(tmp_path: Path) -> None:
    root = tmp_path / "store"
    crashed = start_server(root, tmp_path / "run1")
    channel, release, _future = _open_upload(crashed.target, "c/dead.bin")
    assert wait_for(lambda: len(temp_files(root)) == 1)
    crashed.stop(signal.SIGKILL)
    release.set()
    channel.close()
    dead_file = temp_files(root)
    assert len(dead_file) == 1, "the killed server's upload stays until a sweep"
    live = start_server(root, tmp_path / "run2")  # sweeps at start
    try:
        assert wait_for(lambda: not temp_files(root)), "a dead owner's file survived the restart"
        channel, release, future = _open_upload(live.target, "c/live.bin")
        assert wait_for(lambda: len(temp_files(root)) == 1)
        another = start_server(root, tmp_path / "run3")  # a second replica on the same root
        try:
            time.sleep(1.0)  # its start-up sweep has run (it runs first on its sweep thread)
            assert "removed" not in another.log_text()
            assert len(temp_files(root)) == 1, "a live server's upload was removed"
        finally:
            assert another.stop() == 0
        release.set()
        with contextlib.suppress(grpc.RpcError):
            future.result()
        channel.close()
    finally:
        assert live.stop() == 0


class _LostAnswer(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """The UNAVAILABLE a client sees when the server dies after publishing, before answering
    (a crash at that instant cannot be caused on demand)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Socket closed"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def test_after_unavailable_the_client_checks_whether_its_upload_landed(
    server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    local = tmp_path / "w.bin"
    digest = write_random(local, 100_000)
    with ArtifactClient(server.target) as client:
        real = client._stub.LogArtifact

        def published_then_lost(messages: Any, **kwargs: Any) -> Any:
            real(messages, **kwargs)
            raise _LostAnswer()

        client._stub.LogArtifact = published_then_lost  # type: ignore[method-assign]
        info = client.log_artifact(local, prefix)
        assert info.sha256 == digest and info.file_size == 100_000

        def lost_before_finish(messages: Any, **kwargs: Any) -> Any:
            next(iter(messages))  # the header only: the finish was never sent
            raise _LostAnswer()

        client._stub.LogArtifact = lost_before_finish  # type: ignore[method-assign]
        with pytest.raises(Exception, match="unavailable"):
            client.log_artifact(local, f"{prefix}/other")


# -- 9. idle connections are bounded --------------------------------------------------------


def test_idle_connections_are_capped_and_timed_out(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "store", tmp_path / "run", "--max-connections", "20", "--handshake-timeout", "2"
    )
    sockets: list[socket.socket] = []
    try:
        baseline = open_fds(server.process.pid)
        for _ in range(60):  # bare TCP connections that never send the HTTP/2 preface
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.5)
        assert open_fds(server.process.pid) <= baseline + 25
        with grpc.insecure_channel(server.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=20, wait_for_ready=True
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # every bare connection is closed by the server: past the cap at once, the rest when
        # the handshake timeout runs out
        for sock in sockets:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):  # at most a GOAWAY frame, then the end
                    pass
        assert wait_for(lambda: open_fds(server.process.pid) <= baseline + 2, 10)
    finally:
        for sock in sockets:
            sock.close()
        assert server.stop() == 0
