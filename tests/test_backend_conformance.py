"""The same behaviour on every storage backend, through a real artifactd server process.

Each test runs once per backend in `backend_servers.BACKENDS` (local disk; S3 on moto's server;
GCS on gcp-storage-emulator; Azure Blob on Azurite; FTP; SFTP; HDFS's adapter on pyarrow's local
filesystem, as a plugin),
against a server started for the session, under a fresh `prefix` of its own.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.protocol.errors import AlreadyExists, FailedPrecondition, NotFound
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from backend_servers import Backend
from conftest import sha256_of, write_random

CHUNK = 256 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@pytest.fixture
def bclient(backend: Backend) -> Iterator[ArtifactClient]:
    with ArtifactClient(backend.server.target) as c:
        yield c


@pytest.fixture
def bstub(backend: Backend) -> Iterator[pb_grpc.ArtifactServiceStub]:
    with grpc.insecure_channel(backend.server.target) as channel:
        yield pb_grpc.ArtifactServiceStub(channel)


def upload(
    stub: pb_grpc.ArtifactServiceStub, path: str, data: bytes, overwrite: int
) -> pb.LogArtifactResponse:
    def messages() -> Iterator[pb.LogArtifactRequest]:
        header = pb.UploadHeader(path=path, size=len(data), overwrite=overwrite)
        yield pb.LogArtifactRequest(header=header, data=data[:CHUNK])
        for start in range(CHUNK, len(data), CHUNK):
            yield pb.LogArtifactRequest(data=data[start : start + CHUNK])
        yield pb.LogArtifactRequest(finish=pb.UploadFinish(sha256=hashlib.sha256(data).hexdigest()))

    return stub.LogArtifact(messages(), timeout=30)


def read(stub: pb_grpc.ArtifactServiceStub, path: str, offset: int = 0, limit: int = 0) -> bytes:
    request = pb.DownloadArtifactRequest(path=path, offset=offset, limit=limit)
    return b"".join(m.data for m in stub.DownloadArtifact(request, timeout=30))


def put(client: ArtifactClient, tmp_path: Path, path: str, data: bytes) -> None:
    """Uploads `data` to the artifact path `path` with the Python client."""
    directory, _, name = path.rpartition("/")
    local = tmp_path / "src" / hashlib.sha256(path.encode()).hexdigest()[:12] / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    client.log_artifact(local, directory or None)


def segment_order(paths: list[str]) -> list[str]:
    return sorted(paths, key=lambda p: tuple(p.split("/")))


def test_backend_is_the_one_asked_for(backend: Backend, bclient: ArtifactClient) -> None:
    assert bclient.get_capabilities().backend == backend.name


def test_round_trip_keeps_bytes_and_digest(
    bclient: ArtifactClient, prefix: str, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "model.bin", 300_001)
    info = bclient.log_artifact(tmp_path / "model.bin", prefix)
    assert (info.path, info.file_size, info.sha256) == (f"{prefix}/model.bin", 300_001, digest)
    stat = bclient.get_artifact_info(f"{prefix}/model.bin")
    assert (stat.is_dir, stat.file_size, stat.sha256) == (False, 300_001, digest)
    local = bclient.download_artifacts(f"{prefix}/model.bin", tmp_path / "out")
    assert sha256_of(Path(local)) == digest


def test_range_reads(bstub: pb_grpc.ArtifactServiceStub, prefix: str) -> None:
    data = os.urandom(700_000)
    path = f"{prefix}/r.bin"
    upload(bstub, path, data, pb.OVERWRITE_POLICY_OVERWRITE)
    assert read(bstub, path) == data
    for offset, limit in [(0, 10), (10, 100), (CHUNK - 3, 7), (699_990, 0), (699_990, 100)]:
        expected = data[offset : offset + limit] if limit else data[offset:]
        assert read(bstub, path, offset, limit) == expected, (offset, limit)
    assert read(bstub, path, len(data), 0) == b""
    with pytest.raises(grpc.RpcError) as info:
        read(bstub, path, len(data) + 1)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_stat_file_directory_and_missing(
    bclient: ArtifactClient, prefix: str, tmp_path: Path
) -> None:
    put(bclient, tmp_path, f"{prefix}/d/e/f.txt", b"hello")
    f = bclient.get_artifact_info(f"{prefix}/d/e/f.txt")
    assert (f.is_dir, f.file_size, f.sha256) == (False, 5, hashlib.sha256(b"hello").hexdigest())
    for directory in (prefix, f"{prefix}/d", f"{prefix}/d/e"):
        assert bclient.get_artifact_info(directory).is_dir, directory
    for missing in (
        f"{prefix}/nope",
        f"{prefix}/d/e/f.tx",
        f"{prefix}/d/e/f.txt/x",
        f"{prefix}/dd",
    ):
        with pytest.raises(NotFound):
            bclient.get_artifact_info(missing)


TREE = ["a/x", "a/y/z", "a-b", "a.txt", "ab", "b/c/d", "b/c.txt", "b0", "é", "z"]


def test_listing_order_and_pagination(
    bclient: ArtifactClient, bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    for name in TREE:
        upload(bstub, f"{prefix}/{name}", name.encode(), pb.OVERWRITE_POLICY_OVERWRITE)
    direct = segment_order(sorted({n.split("/")[0] for n in TREE}))
    recursive = segment_order(
        sorted({"/".join(n.split("/")[: i + 1]) for n in TREE for i in range(n.count("/") + 1)})
    )
    for page_size in (0, 1, 2, 3):
        listed = [i.path for i in bclient.iter_artifacts(prefix, page_size=page_size)]
        assert listed == [f"{prefix}/{n}" for n in direct], page_size
        listed = [i.path for i in bclient.iter_artifacts(prefix, True, page_size)]
        assert listed == [f"{prefix}/{n}" for n in recursive], page_size
    infos = {i.path: i for i in bclient.list_artifacts(prefix, recursive=True)}
    assert infos[f"{prefix}/a"].is_dir and not infos[f"{prefix}/a-b"].is_dir
    assert infos[f"{prefix}/b/c.txt"].file_size == len(b"b/c.txt")
    assert [i.path for i in bclient.list_artifacts(f"{prefix}/b")] == [
        f"{prefix}/b/c",
        f"{prefix}/b/c.txt",
    ]
    with pytest.raises(FailedPrecondition):
        bclient.list_artifacts(f"{prefix}/a-b")
    with pytest.raises(NotFound):
        bclient.list_artifacts(f"{prefix}/missing")


def test_delete_file_and_tree_never_siblings(
    bclient: ArtifactClient, bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    for name in ["foo/x", "foo/y/z", "foobar", "foo.txt", "foo-1/x"]:
        upload(bstub, f"{prefix}/{name}", b"1", pb.OVERWRITE_POLICY_OVERWRITE)
    assert bclient.delete_artifacts(f"{prefix}/foo") is True
    assert [i.path for i in bclient.list_artifacts(prefix, recursive=True)] == [
        f"{prefix}/foo-1",
        f"{prefix}/foo-1/x",
        f"{prefix}/foo.txt",
        f"{prefix}/foobar",
    ]
    with pytest.raises(NotFound):
        bclient.get_artifact_info(f"{prefix}/foo")
    assert bclient.delete_artifacts(f"{prefix}/foo") is False
    assert bclient.delete_artifacts(f"{prefix}/foobar") is True
    assert bclient.delete_artifacts(f"{prefix}/fooba") is False
    assert read(bstub, f"{prefix}/foo.txt") == b"1"


def test_overwrite_and_fail_if_exists(bstub: pb_grpc.ArtifactServiceStub, prefix: str) -> None:
    path = f"{prefix}/m.bin"
    upload(bstub, path, b"first", pb.OVERWRITE_POLICY_FAIL_IF_EXISTS)
    with pytest.raises(grpc.RpcError) as info:
        upload(bstub, path, b"second", pb.OVERWRITE_POLICY_FAIL_IF_EXISTS)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert read(bstub, path) == b"first"
    upload(bstub, path, b"third", pb.OVERWRITE_POLICY_OVERWRITE)
    assert read(bstub, path) == b"third"


def test_fail_if_exists_with_the_client(
    backend: Backend, bclient: ArtifactClient, prefix: str, tmp_path: Path
) -> None:
    put(bclient, tmp_path, f"{prefix}/c.txt", b"one")
    with (
        ArtifactClient(backend.server.target, overwrite=False) as careful,
        pytest.raises(AlreadyExists),
    ):
        put(careful, tmp_path / "2", f"{prefix}/c.txt", b"two")
    assert bclient.get_artifact_info(f"{prefix}/c.txt").file_size == 3


def test_file_and_directory_cannot_replace_each_other(
    bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    upload(bstub, f"{prefix}/f", b"file", pb.OVERWRITE_POLICY_OVERWRITE)
    upload(bstub, f"{prefix}/d/x", b"x", pb.OVERWRITE_POLICY_OVERWRITE)
    for path in (f"{prefix}/f/g", f"{prefix}/d"):
        with pytest.raises(grpc.RpcError) as info:
            upload(bstub, path, b"nope", pb.OVERWRITE_POLICY_OVERWRITE)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, path
    assert read(bstub, f"{prefix}/f") == b"file"
    assert read(bstub, f"{prefix}/d/x") == b"x"


def _stalled(
    path: str, sent: threading.Event, release: threading.Event
) -> Iterator[pb.LogArtifactRequest]:
    """12 MiB of a file (more than one 8 MiB part on S3), then never the end."""
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path))
    for _ in range(48):
        yield pb.LogArtifactRequest(data=b"\xab" * CHUNK)
    sent.set()
    release.wait(30)


def _wait_until(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_interrupted_upload_is_invisible_and_harmless(
    backend: Backend, bclient: ArtifactClient, bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    upload(bstub, f"{prefix}/old.bin", b"version 1", pb.OVERWRITE_POLICY_OVERWRITE)
    for path in (f"{prefix}/new.bin", f"{prefix}/old.bin"):
        sent, release = threading.Event(), threading.Event()
        future = bstub.LogArtifact.future(_stalled(path, sent, release))
        assert sent.wait(20)
        # the server writes (on S3 sends a part of, on Azure stages a block of) what it received
        assert _wait_until(lambda: bool(backend.leftovers(prefix))), (
            "the upload in progress holds nothing in storage"
        )
        assert [i.path for i in bclient.list_artifacts(prefix)] == [f"{prefix}/old.bin"]
        future.cancel()
        release.set()
        with pytest.raises(grpc.FutureCancelledError):
            future.result()
        assert _wait_until(lambda: not backend.leftovers(prefix)), backend.leftovers(prefix)
    assert read(bstub, f"{prefix}/old.bin") == b"version 1"
    with pytest.raises(NotFound):
        bclient.get_artifact_info(f"{prefix}/new.bin")


def test_size_or_digest_mismatch_stores_nothing(
    bstub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    def messages() -> Iterator[pb.LogArtifactRequest]:
        yield pb.LogArtifactRequest(header=pb.UploadHeader(path=f"{prefix}/bad"), data=b"abc")
        yield pb.LogArtifactRequest(finish=pb.UploadFinish(sha256="0" * 64))

    with pytest.raises(grpc.RpcError) as info:
        bstub.LogArtifact(messages(), timeout=30)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    with pytest.raises(grpc.RpcError) as info:
        read(bstub, f"{prefix}/bad")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_large_file_streams_through(
    bclient: ArtifactClient, bstub: pb_grpc.ArtifactServiceStub, prefix: str, tmp_path: Path
) -> None:
    size = 21 * 1024 * 1024 + 12345  # three parts on S3, the last a partial one
    digest = write_random(tmp_path / "big.bin", size)
    info = bclient.log_artifact(tmp_path / "big.bin", prefix)
    assert (info.file_size, info.sha256) == (size, digest)
    stat = bclient.get_artifact_info(f"{prefix}/big.bin")
    assert (stat.file_size, stat.sha256) == (size, digest)
    local = bclient.download_artifacts(f"{prefix}/big.bin", tmp_path / "out")
    assert sha256_of(Path(local)) == digest
    with open(tmp_path / "big.bin", "rb") as fh:
        boundary = 8 * 1024 * 1024
        fh.seek(boundary - 100)
        assert read(bstub, f"{prefix}/big.bin", boundary - 100, 200) == fh.read(200)


def test_unicode_names(bclient: ArtifactClient, prefix: str, tmp_path: Path) -> None:
    names = ["données/modèle ✓.txt", "模型/权重.bin", "emoji-🎉.json"]
    for name in names:
        put(bclient, tmp_path, f"{prefix}/{name}", name.encode())
    listed = [i.path for i in bclient.list_artifacts(prefix, recursive=True) if not i.is_dir]
    assert listed == [f"{prefix}/{n}" for n in segment_order(names)]
    out = Path(bclient.download_artifacts(prefix, tmp_path / "out"))
    for name in names:
        assert (out / name).read_bytes() == name.encode()


def test_empty_files(
    bclient: ArtifactClient, bstub: pb_grpc.ArtifactServiceStub, prefix: str, tmp_path: Path
) -> None:
    put(bclient, tmp_path, f"{prefix}/empty", b"")
    info = bclient.get_artifact_info(f"{prefix}/empty")
    assert (info.is_dir, info.file_size, info.sha256) == (False, 0, EMPTY_SHA256)
    assert read(bstub, f"{prefix}/empty") == b""
    assert [(i.path, i.file_size) for i in bclient.list_artifacts(prefix)] == [
        (f"{prefix}/empty", 0)
    ]
    local = bclient.download_artifacts(f"{prefix}/empty", tmp_path / "out")
    assert Path(local).read_bytes() == b""


def test_parallel_uploads_and_downloads(backend: Backend, prefix: str, tmp_path: Path) -> None:
    sizes = [1, 200_000, 1_000_000, 2_500_000, 3_000_001, 9 * 1024 * 1024]
    digests = {
        f"f{i}.bin": write_random(tmp_path / "in" / f"f{i}.bin", s) for i, s in enumerate(sizes)
    }

    def up(name: str) -> str | None:
        with ArtifactClient(backend.server.target) as c:
            return c.log_artifact(tmp_path / "in" / name, prefix).sha256

    def down(name: str) -> str:
        with ArtifactClient(backend.server.target) as c:
            return sha256_of(
                Path(c.download_artifacts(f"{prefix}/{name}", tmp_path / "out" / name))
            )

    with ThreadPoolExecutor(len(sizes)) as pool:
        assert dict(zip(digests, pool.map(up, digests), strict=True)) == digests
        assert dict(zip(digests, pool.map(down, digests), strict=True)) == digests
        # Everyone reads the same file at once.
        assert set(pool.map(down, ["f5.bin"] * 6)) == {digests["f5.bin"]}


def test_parallel_uploads_create_one_new_folder_together(
    backend: Backend, prefix: str, tmp_path: Path
) -> None:
    """Uploads racing to create the same missing parents: every one of them must succeed."""
    count = 12
    start = threading.Barrier(count)
    for index in range(count):
        (tmp_path / f"f{index}.bin").write_bytes(b"x" * index)

    def up(index: int) -> str | None:
        with ArtifactClient(backend.server.target) as c:
            start.wait(timeout=30)
            return c.log_artifact(tmp_path / f"f{index}.bin", f"{prefix}/new/deeper").sha256

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(up, range(count)))
    assert len(results) == count
    with ArtifactClient(backend.server.target) as c:
        listed = [i.path for i in c.list_artifacts(f"{prefix}/new/deeper")]
    assert sorted(listed) == sorted(f"{prefix}/new/deeper/f{i}.bin" for i in range(count))


def test_download_a_tree(bclient: ArtifactClient, prefix: str, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    digests = {
        "model/weights.bin": write_random(src / "model/weights.bin", 1_500_000),
        "model/config.json": write_random(src / "model/config.json", 300),
        "model/sub/deep/x": write_random(src / "model/sub/deep/x", 10),
        "empty.txt": write_random(src / "empty.txt", 0),
        "README": write_random(src / "README", 42),
    }
    stored = bclient.log_artifacts(src, prefix)
    assert {i.path: i.sha256 for i in stored} == {f"{prefix}/{k}": v for k, v in digests.items()}
    out = Path(bclient.download_artifacts(prefix, tmp_path / "out"))
    got = {str(p.relative_to(out)): sha256_of(p) for p in out.rglob("*") if p.is_file()}
    assert got == digests
