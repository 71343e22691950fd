"""Every artifact RPC against a real server process over a real channel."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import crc32c
import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.client.checksums import CRC32C_FROM, checksum_for
from artifactd.protocol import errors
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd_server.storage.base import PRECHECKED_FROM

from conftest import sha256_of, visible_files, write_random
from servers import ServerProcess

KiB = 1024
MiB = 1024 * KiB
OVERWRITE = pb.OVERWRITE_POLICY_OVERWRITE
FAIL_IF_EXISTS = pb.OVERWRITE_POLICY_FAIL_IF_EXISTS


def upload(
    stub: pb_grpc.ArtifactServiceStub,
    path: str,
    chunks: list[bytes],
    *,
    size: int | None = None,
    header_sha: str = "",
    finish_sha: str | None = None,
    finish_crc: int | None = None,
    finish: bool = True,
    overwrite: int = pb.OVERWRITE_POLICY_UNSPECIFIED,
) -> pb.LogArtifactResponse:
    """Raw LogArtifact with full control over what the client declares."""

    def messages() -> Iterator[pb.LogArtifactRequest]:
        header = pb.UploadHeader(path=path, sha256=header_sha, overwrite=overwrite)
        if size is not None:
            header.size = size
        yield pb.LogArtifactRequest(header=header)
        for chunk in chunks:
            yield pb.LogArtifactRequest(data=chunk)
        if finish:
            declared = pb.UploadFinish(sha256=finish_sha or "")
            if finish_crc is not None:
                declared.crc32c = finish_crc
            yield pb.LogArtifactRequest(finish=declared)

    return stub.LogArtifact(messages(), timeout=30)  # type: ignore[no-any-return]


def download(
    stub: pb_grpc.ArtifactServiceStub, path: str, offset: int = 0, limit: int = 0
) -> tuple[pb.FileInfo, bytes]:
    info = None
    data = bytearray()
    for message in stub.DownloadArtifact(
        pb.DownloadArtifactRequest(path=path, offset=offset, limit=limit), timeout=30
    ):
        if message.HasField("info"):
            assert info is None, "info must come only in the first message"
            info = message.info
        data += message.data
    assert info is not None
    return info, bytes(data)


def test_log_and_download_file_roundtrip(
    client: ArtifactClient, prefix: str, tmp_path: Path, server: ServerProcess
) -> None:
    local = tmp_path / "weights.bin"
    digest = write_random(local, 3 * MiB + 17)
    info = client.log_artifact(local, f"{prefix}/model")
    assert info.path == f"{prefix}/model/weights.bin"
    assert info.file_size == 3 * MiB + 17
    assert info.sha256 == digest
    assert sha256_of(server.root / prefix / "model" / "weights.bin") == digest
    out = client.download_artifacts(f"{prefix}/model/weights.bin", tmp_path / "dst")
    assert out == str(tmp_path / "dst" / prefix / "model" / "weights.bin")
    assert sha256_of(Path(out)) == digest
    assert visible_files(tmp_path / "dst") == [f"{prefix}/model/weights.bin"], "no temp files left"


def test_log_and_download_directory_roundtrip(
    client: ArtifactClient, prefix: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    expected = {}
    for i in range(40):
        rel = f"part{i % 3}/sub{i % 2}/f{i}.bin"
        expected[rel] = write_random(src / rel, i * 997)
    (src / "empty.txt").write_bytes(b"")
    expected["empty.txt"] = hashlib.sha256(b"").hexdigest()
    stored = client.log_artifacts(src, f"{prefix}/run")
    assert sorted(i.path for i in stored) == sorted(f"{prefix}/run/{r}" for r in expected)
    out = Path(client.download_artifacts(f"{prefix}/run", tmp_path / "dst"))
    assert out == tmp_path / "dst" / prefix / "run"
    got = {str(p.relative_to(out)): sha256_of(p) for p in out.rglob("*") if p.is_file()}
    assert got == expected


def test_download_root_of_a_subtree_keeps_empty_directories(
    client: ArtifactClient, prefix: str, tmp_path: Path, server: ServerProcess
) -> None:
    (server.root / prefix / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "f").write_bytes(b"x")
    client.log_artifact(tmp_path / "f", prefix)
    out = Path(client.download_artifacts(prefix, tmp_path / "dst"))
    assert (out / "empty" / "deeper").is_dir()
    assert (out / "f").read_bytes() == b"x"


def test_unicode_empty_and_deep_paths(
    client: ArtifactClient, prefix: str, tmp_path: Path, server: ServerProcess
) -> None:
    name = tmp_path / "données 模型 😀.txt"
    name.write_bytes("héllo".encode())
    deep = "/".join(f"d{i}" for i in range(60))
    info = client.log_artifact(name, f"{prefix}/{deep}")
    assert info.path == f"{prefix}/{deep}/données 模型 😀.txt"
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert client.log_artifact(empty, prefix).file_size == 0
    assert client.get_artifact_info(f"{prefix}/empty.bin").sha256 == hashlib.sha256(b"").hexdigest()
    out = Path(client.download_artifacts(f"{prefix}/{deep}/données 模型 😀.txt", tmp_path / "o"))
    assert out.read_bytes() == "héllo".encode()
    out = Path(client.download_artifacts(f"{prefix}/empty.bin", tmp_path / "o"))
    assert out.read_bytes() == b""


def test_range_reads(stub: pb_grpc.ArtifactServiceStub, prefix: str) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    upload(stub, f"{prefix}/r.bin", [body])
    info, data = download(stub, f"{prefix}/r.bin", offset=1000, limit=5000)
    assert data == body[1000:6000]
    assert info.file_size == len(body), "info describes the whole file, not the range"
    assert info.sha256 == hashlib.sha256(body).hexdigest()
    assert download(stub, f"{prefix}/r.bin", offset=len(body) - 10)[1] == body[-10:]
    assert download(stub, f"{prefix}/r.bin", offset=len(body))[1] == b""
    assert download(stub, f"{prefix}/r.bin", offset=5, limit=10 * len(body))[1] == body[5:]
    with pytest.raises(grpc.RpcError) as err:
        download(stub, f"{prefix}/r.bin", offset=len(body) + 1)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.RpcError) as err:
        download(stub, f"{prefix}/r.bin", offset=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_digest_mismatch_is_rejected_and_keeps_the_old_version(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    path = f"{prefix}/m.bin"
    upload(stub, path, [b"old"])
    for kwargs in ({"header_sha": "0" * 64}, {"finish_sha": "f" * 64}):
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, path, [b"new content"], **kwargs)  # type: ignore[arg-type]
        assert err.value.code() == grpc.StatusCode.DATA_LOSS
        assert "sha256" in (err.value.details() or "")
    assert (server.root / prefix / "m.bin").read_bytes() == b"old"
    assert visible_files(server.root / prefix) == ["m.bin"], "no temp file may remain"


def test_large_uploads_are_checked_the_same(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    """Files of 8 MiB and more are hashed and written on a second server thread: same checks."""
    path = f"{prefix}/big.bin"
    good = [bytes([i]) * MiB for i in range(9)]
    upload(stub, path, good, size=9 * MiB)
    expected = hashlib.sha256(b"".join(good)).hexdigest()
    assert sha256_of(server.root / prefix / "big.bin") == expected
    attempts: list[dict[str, object]] = [
        {"finish_sha": "f" * 64, "size": 9 * MiB},  # wrong digest at the end
        {"size": 10 * MiB},  # fewer bytes than declared
        {"size": 8 * MiB},  # more bytes than declared
    ]
    for kwargs in attempts:
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, path, [b"x" * MiB] * 9, **kwargs)  # type: ignore[arg-type]
        assert err.value.code() == grpc.StatusCode.DATA_LOSS, kwargs
    assert sha256_of(server.root / prefix / "big.bin") == expected
    assert visible_files(server.root / prefix) == ["big.bin"], "no temp file may remain"


@pytest.mark.parametrize("size", [0, 5, 9 * MiB], ids=["empty", "small", "9MiB"])
def test_crc32c_is_checked_when_declared(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess, size: int
) -> None:
    """A declared CRC32C is checked like a sha256 (0 too: it is a value, not "unset")."""
    path = f"{prefix}/c.bin"
    data = os.urandom(size)
    chunks = [data[i : i + MiB] for i in range(0, size, MiB)]
    upload(stub, path, [b"old"])
    for wrong in (crc32c.crc32c(data) ^ 1, crc32c.crc32c(data + b"x"), 0 if size else 1):
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, path, chunks, size=size, finish_crc=wrong)
        assert err.value.code() == grpc.StatusCode.DATA_LOSS
        assert "CRC32C" in (err.value.details() or "")
        assert (server.root / prefix / "c.bin").read_bytes() == b"old"
    reply = upload(stub, path, chunks, size=size, finish_crc=crc32c.crc32c(data))
    assert reply.file.sha256 == hashlib.sha256(data).hexdigest()
    assert visible_files(server.root / prefix) == ["c.bin"], "no temp file may remain"


def test_the_client_sends_a_crc32c_to_servers_that_verify_it_and_a_sha256_otherwise() -> None:
    """A CRC32C for files of CRC32C_FROM bytes or more (and streams of unknown size), where the
    server verifies it; a sha256 for smaller files, which spares a command uploading only
    those the crc32c package's import."""
    data = b"some bytes"
    crc = pb.UploadFinish(crc32c=crc32c.crc32c(data))
    sha = pb.UploadFinish(sha256=hashlib.sha256(data).hexdigest())
    for listed, size, expected in (
        (["sha256", "crc32c"], CRC32C_FROM, crc),
        (["sha256", "crc32c"], None, crc),
        (["sha256", "crc32c"], CRC32C_FROM - 1, sha),
        (["sha256", "crc32c"], 0, sha),
        (["sha256"], CRC32C_FROM, sha),
        ([], CRC32C_FROM, sha),  # an older server
        ([], None, sha),
    ):
        checksum = checksum_for(pb.GetCapabilitiesResponse(upload_checksums=listed))(size)
        checksum.update(data)
        assert checksum.finish() == expected, (listed, size)


@pytest.mark.parametrize("overwrite", [OVERWRITE, FAIL_IF_EXISTS])
@pytest.mark.parametrize("size", [PRECHECKED_FROM - 1, PRECHECKED_FROM, None])
def test_a_file_cannot_replace_a_directory_whether_refused_before_or_after_its_bytes(
    stub: pb_grpc.ArtifactServiceStub,
    prefix: str,
    server: ServerProcess,
    size: int | None,
    overwrite: int,
) -> None:
    """Uploads declaring PRECHECKED_FROM bytes or more (or no size) are refused before their
    bytes are sent; smaller ones by the publish, which costs no system call per file when
    nothing is in the way. Either way: FAILED_PRECONDITION saying why, the directory untouched,
    no temporary file left."""
    upload(stub, f"{prefix}/d/inside.bin", [b"kept"])
    data = b"x" * (size if size is not None else 1000)
    chunks = [data[i : i + MiB] for i in range(0, len(data), MiB)]
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, f"{prefix}/d", chunks, size=size, overwrite=overwrite)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert "is a directory; a file cannot replace it" in (err.value.details() or "")
    assert visible_files(server.root / prefix) == ["d/inside.bin"]


def test_size_mismatch_is_rejected(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    for size, chunks in ((10, [b"12345"]), (3, [b"12345"])):
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, f"{prefix}/s.bin", chunks, size=size)
        assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert not (server.root / prefix / "s.bin").exists()


def test_bad_digest_syntax_and_negative_size(
    stub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    for kwargs in ({"header_sha": "xyz"}, {"size": -1}):
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, f"{prefix}/x.bin", [b"1"], **kwargs)  # type: ignore[arg-type]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_without_finish_publishes_nothing(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    upload(stub, f"{prefix}/keep.bin", [b"v1"])
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, f"{prefix}/keep.bin", [b"v2 partial"], finish=False)
    assert err.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, f"{prefix}/new/never.bin", [b"partial"], finish=False)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert (server.root / prefix / "keep.bin").read_bytes() == b"v1"
    assert visible_files(server.root / prefix) == ["keep.bin"]
    assert not (server.root / prefix / "new").exists(), (
        "directories made for the upload are removed"
    )


def test_protocol_violations(stub: pb_grpc.ArtifactServiceStub, prefix: str) -> None:
    cases = [
        [],  # no message at all
        [pb.LogArtifactRequest(data=b"x")],  # data before header
        [pb.LogArtifactRequest(header=pb.UploadHeader(path=f"{prefix}/a")),
         pb.LogArtifactRequest(header=pb.UploadHeader(path=f"{prefix}/b"))],
        [pb.LogArtifactRequest(header=pb.UploadHeader(path=f"{prefix}/a"), finish=pb.UploadFinish()),
         pb.LogArtifactRequest(header=pb.UploadHeader(path=f"{prefix}/b"), finish=pb.UploadFinish())],
    ]  # fmt: skip
    for messages in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.LogArtifact(iter(messages), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, messages


def test_overwrite_policies(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    path = f"{prefix}/o.bin"
    upload(stub, path, [b"first"], overwrite=pb.OVERWRITE_POLICY_FAIL_IF_EXISTS)
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, path, [b"second"], overwrite=pb.OVERWRITE_POLICY_FAIL_IF_EXISTS)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (server.root / prefix / "o.bin").read_bytes() == b"first"
    upload(stub, path, [b"third"], overwrite=pb.OVERWRITE_POLICY_OVERWRITE)
    assert (server.root / prefix / "o.bin").read_bytes() == b"third"
    upload(stub, path, [b"fourth"])  # unspecified means overwrite, as MLflow does
    assert (server.root / prefix / "o.bin").read_bytes() == b"fourth"
    assert visible_files(server.root / prefix) == ["o.bin"]


def test_parent_replaced_behind_the_server_right_after_an_upload(
    stub: pb_grpc.ArtifactServiceStub, server: ServerProcess, prefix: str
) -> None:
    """The server reuses recently resolved parent folders; a changed folder must not fool it."""
    upload(stub, f"{prefix}/d/first.bin", [b"1"])
    folder = server.root / prefix / "d"
    (folder / "first.bin").unlink()
    folder.rmdir()
    folder.write_bytes(b"now a file")  # within the reuse window, from outside the server
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, f"{prefix}/d/second.bin", [b"2"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    folder.unlink()
    upload(stub, f"{prefix}/d/third.bin", [b"3"])  # gone altogether: made again
    assert visible_files(server.root / prefix) == ["d/third.bin"]


def test_file_and_directory_conflicts(stub: pb_grpc.ArtifactServiceStub, prefix: str) -> None:
    upload(stub, f"{prefix}/a/file.bin", [b"x"])
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, f"{prefix}/a", [b"y"])  # a directory is there
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, f"{prefix}/a/file.bin/inner", [b"y"])  # a file is a parent
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        download(stub, f"{prefix}/a")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.DownloadArtifacts(
                pb.DownloadArtifactsRequest(path=f"{prefix}/a/file.bin"), timeout=10
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_log_artifacts_reports_per_file_results(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    upload(stub, f"{prefix}/exists.bin", [b"keep"])

    def one(path: str, data: bytes, **finish: str) -> pb.LogArtifactsRequest:
        return pb.LogArtifactsRequest(
            header=pb.UploadHeader(path=path, overwrite=pb.OVERWRITE_POLICY_FAIL_IF_EXISTS),
            data=data, finish=pb.UploadFinish(**finish),
        )  # fmt: skip

    messages = [
        one(f"{prefix}/ok1.bin", b"1"),
        one(f"{prefix}/exists.bin", b"2"),
        one(f"{prefix}/bad.bin", b"3", sha256="0" * 64),
        one(f"{prefix}/../escape.bin", b"4"),
        pb.LogArtifactsRequest(header=pb.UploadHeader(path=f"{prefix}/split.bin"), data=b"ab"),
        pb.LogArtifactsRequest(data=b"cd"),
        pb.LogArtifactsRequest(data=b"ef", finish=pb.UploadFinish()),
        one(f"{prefix}/ok1.bin", b"latest"),  # again, fail-if-exists: the first is committed first
    ]
    results = stub.LogArtifacts(iter(messages), timeout=30).results
    codes = [(r.path, grpc.StatusCode.OK.value[0] if r.code == 0 else r.code) for r in results]
    assert [r.path for r in results] == [
        f"{prefix}/ok1.bin", f"{prefix}/exists.bin", f"{prefix}/bad.bin",
        f"{prefix}/../escape.bin", f"{prefix}/split.bin", f"{prefix}/ok1.bin",
    ], codes  # fmt: skip
    assert [r.code for r in results] == [
        0, grpc.StatusCode.ALREADY_EXISTS.value[0], grpc.StatusCode.DATA_LOSS.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0], 0, grpc.StatusCode.ALREADY_EXISTS.value[0],
    ], codes  # fmt: skip
    assert (server.root / prefix / "exists.bin").read_bytes() == b"keep"
    assert (server.root / prefix / "split.bin").read_bytes() == b"abcdef"
    assert (server.root / prefix / "ok1.bin").read_bytes() == b"1"
    assert sorted(visible_files(server.root / prefix)) == ["exists.bin", "ok1.bin", "split.bin"]


def test_log_artifacts_sending_a_path_again_ends_with_the_last_version(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    """Files are prepared (fsynced) side by side but published in stream order."""
    versions = [f"version {n}".encode() * (n * 1000 + 1) for n in range(40)]
    messages = [
        pb.LogArtifactsRequest(
            header=pb.UploadHeader(path=f"{prefix}/m.bin", overwrite=pb.OVERWRITE_POLICY_OVERWRITE),
            data=data, finish=pb.UploadFinish(),
        )
        for data in versions
    ]  # fmt: skip
    results = stub.LogArtifacts(iter(messages), timeout=60).results
    assert [r.code for r in results] == [0] * len(versions)
    assert (server.root / prefix / "m.bin").read_bytes() == versions[-1]
    assert visible_files(server.root / prefix) == ["m.bin"]
    assert not list((server.root / prefix).glob(".artifactd-*")), "no temp file left behind"
    assert [r.file.file_size for r in results] == [len(v) for v in versions]


def test_log_artifacts_stream_ending_mid_file(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    messages = [
        pb.LogArtifactsRequest(header=pb.UploadHeader(path=f"{prefix}/done.bin"), data=b"1", finish=pb.UploadFinish()),
        pb.LogArtifactsRequest(header=pb.UploadHeader(path=f"{prefix}/cut.bin"), data=b"2"),
    ]  # fmt: skip
    results = stub.LogArtifacts(iter(messages), timeout=30).results
    assert [(r.path, r.code) for r in results] == [
        (f"{prefix}/done.bin", 0), (f"{prefix}/cut.bin", grpc.StatusCode.ABORTED.value[0]),
    ]  # fmt: skip
    assert visible_files(server.root / prefix) == ["done.bin"]


def test_get_artifact_distinguishes_file_directory_and_missing(
    client: ArtifactClient, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("hi")
    client.log_artifact(tmp_path / "f.txt", f"{prefix}/d")
    file_info = client.get_artifact_info(f"{prefix}/d/f.txt")
    assert (file_info.is_dir, file_info.file_size) == (False, 2)
    assert file_info.modified is not None
    assert client.get_artifact_info(f"{prefix}/d").is_dir
    assert client.get_artifact_info("").is_dir  # the root
    with pytest.raises(errors.NotFound):
        client.get_artifact_info(f"{prefix}/missing")
    with pytest.raises(errors.NotFound):
        client.get_artifact_info(f"{prefix}/d/f.txt/below")


def test_delete_is_idempotent_and_respects_prefix_boundaries(
    client: ArtifactClient, prefix: str, tmp_path: Path, server: ServerProcess
) -> None:
    (tmp_path / "x").write_text("x")
    for directory in ("foo", "foobar", "foo/sub"):
        client.log_artifact(tmp_path / "x", f"{prefix}/{directory}")
    client.log_artifact(tmp_path / "x", f"{prefix}")
    assert client.delete_artifacts(f"{prefix}/foo") is True
    assert client.delete_artifacts(f"{prefix}/foo") is False
    assert (server.root / prefix / "foobar" / "x").exists()
    assert client.delete_artifacts(f"{prefix}/x") is True
    assert client.delete_artifacts(f"{prefix}/x/below") is False
    assert [i.path for i in client.list_artifacts(prefix)] == [f"{prefix}/foobar"]
    with pytest.raises(errors.InvalidArgument):
        client.delete_artifacts("")


def test_capabilities(stub: pb_grpc.ArtifactServiceStub) -> None:
    caps = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
    assert caps.digest_function == "sha256"
    assert list(caps.upload_checksums) == ["sha256", "crc32c"]
    assert caps.backend == "local"
    assert 64 * 1024 <= caps.chunk_size <= 4 * MiB
    assert caps.max_message_size == 16 * MiB
    assert caps.supports_range_reads and not caps.supports_multipart_upload
    assert caps.max_page_size >= caps.default_page_size > 0
    assert caps.max_batch_files > 0 and caps.max_path_length == 1024


def test_message_size_limit_is_bounded(stub: pb_grpc.ArtifactServiceStub, prefix: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, f"{prefix}/huge.bin", [b"\0" * (17 * MiB)])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_messages_up_to_the_limit_pass_the_fixed_upload_window(
    server: ServerProcess, prefix: str
) -> None:
    """The server's per-stream receive window is 2 MiB (limits.UPLOAD_WINDOW); messages up to
    the advertised 16 MiB still arrive whole."""
    chunk = os.urandom(16 * MiB - 64 * KiB)
    with grpc.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", 16 * MiB)]
    ) as channel:
        reply = upload(pb_grpc.ArtifactServiceStub(channel), f"{prefix}/large.bin", [chunk] * 3)
    assert reply.file.file_size == 3 * len(chunk)
    assert reply.file.sha256 == hashlib.sha256(chunk * 3).hexdigest()


def test_concurrent_clients(server: ServerProcess, prefix: str, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sources = {i: tmp_path / f"c{i}.bin" for i in range(8)}
    digests = {i: write_random(p, MiB + i) for i, p in sources.items()}

    def worker(i: int) -> str:
        with ArtifactClient(server.target) as c:
            c.log_artifact(sources[i], f"{prefix}/c{i}")
            c.log_artifact(sources[i], f"{prefix}/shared")  # all race on one name: one wins whole
            out = c.download_artifacts(f"{prefix}/c{i}/c{i}.bin", tmp_path / f"out{i}")
            return sha256_of(Path(out))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(worker, range(8))) == [digests[i] for i in range(8)]
    shared = sorted(p.name for p in (server.root / prefix / "shared").iterdir())
    assert shared == sorted(f"c{i}.bin" for i in range(8))
