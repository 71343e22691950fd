"""Resumable uploads through the server (StartResumableUpload, LogArtifact with upload_id and
offset, QueryWriteStatus), on every backend that streams through the server, and the Python
client continuing an upload across a server killed and restarted.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import crc32c
import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.client.direct import DirectSettings
from artifactd.client.settings import ClientSettings
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from backend_servers import Backend
from conftest import visible_files
from servers import start_server

KiB = 1024
MiB = 1024 * KiB
OBJECT_STORES = ("s3", "gcs", "azure")


@pytest.fixture
def bstub(backend: Backend) -> Iterator[pb_grpc.ArtifactServiceStub]:
    with grpc.insecure_channel(backend.server.target) as channel:
        yield pb_grpc.ArtifactServiceStub(channel)


def start(stub: pb_grpc.ArtifactServiceStub, path: str, data: bytes, **fields: object) -> str:
    reply = stub.StartResumableUpload(
        pb.StartResumableUploadRequest(
            path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), **fields
        ),
        timeout=30,
    )
    assert reply.supported
    return str(reply.upload_id)


def send(
    stub: pb_grpc.ArtifactServiceStub,
    upload_id: str,
    offset: int,
    data: bytes,
    *,
    finish: bool | pb.UploadFinish,
) -> pb.LogArtifactResponse:
    def messages() -> Iterator[pb.LogArtifactRequest]:
        header = pb.UploadHeader(upload_id=upload_id, offset=offset)
        yield pb.LogArtifactRequest(header=header)
        for position in range(0, len(data), 64 * KiB):
            yield pb.LogArtifactRequest(data=data[position : position + 64 * KiB])
        if finish:
            declared = finish if isinstance(finish, pb.UploadFinish) else pb.UploadFinish()
            yield pb.LogArtifactRequest(finish=declared)

    return stub.LogArtifact(messages(), timeout=30)


def held(stub: pb_grpc.ArtifactServiceStub, upload_id: str) -> int:
    status = stub.QueryWriteStatus(pb.QueryWriteStatusRequest(upload_id=upload_id), timeout=30)
    return int(status.committed_size)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


def test_a_broken_stream_continues_where_it_stopped(
    backend: Backend, bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    data = os.urandom(3 * MiB + 5)
    path = f"{prefix}/resumed.bin"
    if backend.name in OBJECT_STORES:
        reply = bstub.StartResumableUpload(
            pb.StartResumableUploadRequest(path=path, size=len(data)), timeout=30
        )
        assert not reply.supported, "object stores take direct uploads instead"
        return
    upload_id = start(bstub, path, data)
    assert held(bstub, upload_id) == 0
    # A stream that ends without finish: what arrived is kept, nothing is visible.
    assert code_of(lambda: send(bstub, upload_id, 0, data[: MiB + 1], finish=False)) == (
        grpc.StatusCode.ABORTED
    )
    assert held(bstub, upload_id) == MiB + 1
    assert (
        code_of(lambda: bstub.GetArtifact(pb.GetArtifactRequest(path=path), timeout=30))
        == grpc.StatusCode.NOT_FOUND
    )
    # Continuing from anywhere but the bytes held is refused, and changes nothing.
    for wrong in (0, MiB, MiB + 2):
        assert (
            code_of(lambda wrong=wrong: send(bstub, upload_id, wrong, data[wrong:], finish=True))
            == grpc.StatusCode.FAILED_PRECONDITION
        )
    assert held(bstub, upload_id) == MiB + 1
    assert (
        code_of(lambda: send(bstub, upload_id, MiB + 1, data[MiB + 1 : 2 * MiB], finish=False))
        == grpc.StatusCode.ABORTED
    )  # a second break
    offset = held(bstub, upload_id)
    assert offset == 2 * MiB
    done = send(bstub, upload_id, offset, data[offset:], finish=True)
    assert (done.file.path, done.file.file_size) == (path, len(data))
    assert done.file.sha256 == hashlib.sha256(data).hexdigest()
    stream = bstub.DownloadArtifact(pb.DownloadArtifactRequest(path=path), timeout=30)
    assert b"".join(m.data for m in stream) == data
    assert code_of(lambda: held(bstub, upload_id)) == grpc.StatusCode.NOT_FOUND  # closed
    assert backend.leftovers(prefix) == []


def test_the_whole_file_must_match_what_was_declared(
    backend: Backend, bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    data = os.urandom(200 * KiB)
    path = f"{prefix}/declared.bin"
    if backend.name in OBJECT_STORES:  # they take direct uploads (test_direct_*.py) instead
        reply = bstub.StartResumableUpload(
            pb.StartResumableUploadRequest(path=path, size=len(data)), timeout=30
        )
        assert not reply.supported
        return
    upload_id = start(bstub, path, data)
    corrupt = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    assert code_of(lambda: send(bstub, upload_id, 0, corrupt, finish=True)) == (
        grpc.StatusCode.DATA_LOSS
    )
    assert (
        code_of(lambda: bstub.GetArtifact(pb.GetArtifactRequest(path=path), timeout=30))
        == grpc.StatusCode.NOT_FOUND
    )
    reply = bstub.AbortMultipartUpload(
        pb.AbortMultipartUploadRequest(upload_id=upload_id), timeout=30
    )
    assert reply.existed
    assert backend.leftovers(prefix) == []


def test_header_fields_must_agree_with_the_session(tmp_path: Path) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            data = b"x" * 1000
            upload_id = start(stub, "a/b.bin", data)
            for header in (
                pb.UploadHeader(upload_id=upload_id, path="a/other.bin"),
                pb.UploadHeader(upload_id=upload_id, size=999),
                pb.UploadHeader(upload_id=upload_id, sha256="0" * 64),
                pb.UploadHeader(upload_id=upload_id, offset=-1),
                pb.UploadHeader(path="a/c.bin", offset=10),
            ):
                request = pb.LogArtifactRequest(header=header, data=data, finish=pb.UploadFinish())
                assert code_of(lambda r=request: stub.LogArtifact(iter([r]), timeout=30)) == (
                    grpc.StatusCode.INVALID_ARGUMENT
                ), header
            for bad in ("", "0" * 32, "../x"):
                assert code_of(
                    lambda bad=bad: stub.QueryWriteStatus(
                        pb.QueryWriteStatusRequest(upload_id=bad), timeout=30
                    )
                ) in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
            assert (
                code_of(
                    lambda: stub.StartResumableUpload(
                        pb.StartResumableUploadRequest(path="../escape", size=1), timeout=30
                    )
                )
                == grpc.StatusCode.INVALID_ARGUMENT
            )
            # The kept bytes have a reserved name: never listed, never addressable.
            kept = visible_files(tmp_path / "store")
            assert len(kept) == 1 and kept[0].startswith("a/.artifactd-upload-"), kept
            listing = stub.ListArtifacts(pb.ListArtifactsRequest(path="a"), timeout=30)
            assert list(listing.files) == []
    finally:
        assert server.stop() == 0


def test_the_client_continues_across_a_server_restart(tmp_path: Path) -> None:
    """SIGKILL the server mid-upload, start it again on the same port: the client's retries
    ask what was kept and send only the rest."""
    store, run = tmp_path / "store", tmp_path / "run"
    server = start_server(store, run, "--port", "0")
    port = server.target.rsplit(":", 1)[1]
    local = tmp_path / "model.bin"
    local.write_bytes(os.urandom(48 * MiB))
    settings = DirectSettings(
        enabled=True, minimum_size=MiB, resumable_minimum_size=MiB,
        state_dir=str(tmp_path / "state"),
    )  # fmt: skip
    client = ArtifactClient(
        server.target, direct=settings,
        settings=ClientSettings(max_retries=8, chunk_size=256 * KiB),
    )  # fmt: skip
    outcome: dict[str, object] = {}

    def upload() -> None:
        try:
            outcome["info"] = client.log_artifact(local, "models")
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    thread = threading.Thread(target=upload)
    thread.start()
    restarted = None
    try:
        deadline = time.monotonic() + 60
        while True:
            partial = (
                [p for p in (store / "models").glob(".artifactd-upload-*")]
                if (store / "models").exists()
                else []
            )
            if partial and partial[0].stat().st_size > 4 * MiB:
                break
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            time.sleep(0.01)
        server.stop(signal.SIGKILL)
        restarted = start_server(store, run, "--port", port)
        thread.join(120)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome
        info = outcome["info"]
        assert info.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()  # type: ignore[attr-defined]
        assert (store / "models/model.bin").read_bytes() == local.read_bytes()
        assert "continuing resumable upload" in restarted.log_text()
        assert not list((store / "models").glob(".artifactd-upload-*"))
        assert not list((tmp_path / "state").glob("*.json"))
    finally:
        client.close()
        if restarted is not None:
            assert restarted.stop() == 0


def test_a_continued_streams_crc32c_covers_the_whole_file(
    backend: Backend, bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    """As the sha256: the finish of the last stream declares the CRC32C of every byte held."""
    data = os.urandom(MiB + 3)
    path = f"{prefix}/crc.bin"
    if backend.name in OBJECT_STORES:  # they take direct uploads (test_direct_*.py) instead
        return
    start_reply = bstub.StartResumableUpload(
        pb.StartResumableUploadRequest(path=path, size=len(data)), timeout=30
    )
    upload_id = str(start_reply.upload_id)
    half = len(data) // 2
    assert code_of(lambda: send(bstub, upload_id, 0, data[:half], finish=False)) == (
        grpc.StatusCode.ABORTED
    )
    only_this_stream = pb.UploadFinish(crc32c=crc32c.crc32c(data[half:]))
    assert code_of(lambda: send(bstub, upload_id, half, data[half:], finish=only_this_stream)) == (
        grpc.StatusCode.DATA_LOSS
    )
    assert (
        code_of(lambda: bstub.GetArtifact(pb.GetArtifactRequest(path=path), timeout=30))
        == grpc.StatusCode.NOT_FOUND
    )
    bstub.AbortMultipartUpload(pb.AbortMultipartUploadRequest(upload_id=upload_id), timeout=30)
    upload_id = str(
        bstub.StartResumableUpload(
            pb.StartResumableUploadRequest(path=path, size=len(data)), timeout=30
        ).upload_id
    )
    code_of(lambda: send(bstub, upload_id, 0, data[:half], finish=False))
    whole = pb.UploadFinish(crc32c=crc32c.crc32c(data))
    done = send(bstub, upload_id, half, data[half:], finish=whole)
    assert done.file.sha256 == hashlib.sha256(data).hexdigest()
    assert backend.leftovers(prefix) == []
