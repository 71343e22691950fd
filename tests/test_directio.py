"""Large files around the page cache (artifactd.protocol.directio): the bytes, the cache, the fallbacks.

The file-level tests write real files in `tmp_path` (a filesystem with O_DIRECT, as on every
machine this suite runs on); the page cache is asked through the kernel's `cachestat`. The
end-to-end tests run real servers and clients over gRPC.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactd.client import ArtifactClient
from artifactd.client.settings import ClientSettings
from artifactd.protocol import directio
from artifactd.protocol.errors import InvalidArgument
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from conftest import sha256_of, write_random
from servers import ServerProcess, start_server

MiB = 1024 * 1024
LARGE = 40 * MiB + 12345  # well past DIRECT_AFTER, not a multiple of any block size


def cached(path: Path) -> float:
    """The share of `path`'s pages in the page cache, past the first DIRECT_AFTER bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fraction = directio.cached_fraction(fd, directio.DIRECT_AFTER, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    assert fraction is not None, "this kernel has no cachestat (Linux 6.5+): cannot check"
    return fraction


def o_direct_set(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def write_in_pieces(path: Path, data: bytes, *, direct: bool = True) -> directio.SequentialWriter:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pieces = random.Random(len(data))
    try:
        writer = directio.SequentialWriter(fd, direct=direct)
        position = 0
        while position < len(data):
            step = pieces.randint(1, 3 * MiB)
            writer.write(data[position : position + step])
            position += step
        writer.finish()
        assert not o_direct_set(fd), "finish must leave the descriptor as it found it"
        os.fsync(fd)
    finally:
        os.close(fd)
    return writer


@pytest.mark.parametrize(
    "size",
    [0, 1, 4095, directio.DIRECT_AFTER, directio.DIRECT_AFTER + 1,
     directio.DIRECT_AFTER + directio.BUFFER_SIZE, LARGE],
)  # fmt: skip
def test_the_writer_writes_exactly_the_bytes_given(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    write_in_pieces(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data


def test_a_large_file_is_written_around_the_page_cache(tmp_path: Path) -> None:
    write_in_pieces(tmp_path / "direct", os.urandom(LARGE))
    write_in_pieces(tmp_path / "buffered", os.urandom(LARGE), direct=False)
    assert cached(tmp_path / "direct") < 0.2, "the bytes past the threshold went to the cache"
    assert cached(tmp_path / "buffered") > 0.9, "ordinary writes should fill the cache"


def test_the_writer_resumes_at_an_unaligned_end(tmp_path: Path) -> None:
    """A resumed upload appends to kept bytes of any length (O_APPEND, as the local store)."""
    head, tail = os.urandom(3 * MiB + 7), os.urandom(LARGE)
    path = tmp_path / "f"
    path.write_bytes(head)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        writer = directio.SequentialWriter(fd, position=len(head))
        for start in range(0, len(tail), 1000 * 1000):
            writer.write(tail[start : start + 1000 * 1000])
        assert writer.direct
        writer.finish()
    finally:
        os.close(fd)
    assert path.read_bytes() == head + tail


def test_a_filesystem_without_direct_io_gets_ordinary_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tmpfs and some FUSE filesystems refuse O_DIRECT (fcntl fails with EINVAL)."""

    def refuse(fd: int, on: bool) -> None:
        if on:
            raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(directio, "_set_direct", refuse)
    data = os.urandom(LARGE)
    writer = write_in_pieces(tmp_path / "f", data)
    assert not writer.direct
    assert (tmp_path / "f").read_bytes() == data


def test_a_direct_write_refused_midway_is_redone_the_ordinary_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that takes the flag but refuses the writes (a larger alignment than 4 KiB):
    the refused block is written again without O_DIRECT, and so is the rest."""
    real_write = os.write
    refused = []

    def write(fd: int, data: memoryview) -> int:
        if o_direct_set(fd):
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(directio.os, "write", write)
    data = os.urandom(LARGE)
    writer = write_in_pieces(tmp_path / "f", data)
    assert refused == [directio.BUFFER_SIZE], "one refusal, then no more direct attempts"
    assert not writer.direct
    assert (tmp_path / "f").read_bytes() == data


def test_a_refusal_after_a_partial_direct_write_does_not_write_those_bytes_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may take part of a direct write before refusing the next: only what is left
    goes again, the ordinary way."""
    real_write = os.write
    calls = []

    def write(fd: int, data: memoryview) -> int:
        if o_direct_set(fd):
            calls.append(len(data))
            if len(calls) > 1:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_write(fd, data[: len(data) // 2])
        return real_write(fd, data)

    monkeypatch.setattr(directio.os, "write", write)
    data = os.urandom(LARGE)
    writer = write_in_pieces(tmp_path / "f", data)
    assert calls == [directio.BUFFER_SIZE, directio.BUFFER_SIZE // 2]
    assert not writer.direct
    assert (tmp_path / "f").read_bytes() == data


@pytest.fixture
def large_file(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(LARGE)
    path = tmp_path / "large"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # as a file written around the cache
    yield fd, data
    os.close(fd)


@pytest.mark.parametrize(
    ("start", "end", "chunk"),
    [(0, LARGE, 256 * 1024), (1, LARGE - 1, 1000), (4095, 9 * MiB + 3, MiB),
     (LARGE - 5, LARGE, 256 * 1024), (directio.BUFFER_SIZE, 2 * directio.BUFFER_SIZE, 4096)],
)  # fmt: skip
def test_reads_return_exactly_the_range_asked(
    large_file: tuple[int, bytes], start: int, end: int, chunk: int
) -> None:
    fd, data = large_file
    chunks = list(directio.read_chunks(fd, start, end, chunk))
    assert b"".join(chunks) == data[start:end]
    assert all(0 < len(c) <= chunk for c in chunks), "chunks end at block edges, never above"
    assert not o_direct_set(fd), "the descriptor is left as it was found"


def test_reading_around_the_cache_leaves_it_empty(large_file: tuple[int, bytes]) -> None:
    fd, data = large_file
    assert directio.cached_fraction(fd, 0, LARGE) == pytest.approx(0.0, abs=0.05)
    assert not directio.mostly_cached(fd, 0, LARGE)
    assert b"".join(directio.read_chunks(fd, 0, LARGE, 256 * 1024)) == data
    assert directio.cached_fraction(fd, 0, LARGE) == pytest.approx(0.0, abs=0.05)
    while os.read(fd, 4 * MiB):  # an ordinary read fills it
        pass
    assert directio.mostly_cached(fd, 0, LARGE)


def test_a_read_stopped_early_releases_its_thread_and_descriptor(
    large_file: tuple[int, bytes],
) -> None:
    fd, data = large_file
    chunks = directio.read_chunks(fd, 0, LARGE, 256 * 1024)
    assert next(chunks) == data[: 256 * 1024]
    chunks.close()  # a client that went away mid-download
    assert not o_direct_set(fd)
    assert b"".join(directio.read_chunks(fd, 0, 10, 4)) == data[:10], "the descriptor still works"


def test_a_file_shorter_than_announced_ends_the_read_early(large_file: tuple[int, bytes]) -> None:
    """The caller compares what came with the size it expected (the local store: DATA_LOSS)."""
    fd, data = large_file
    assert b"".join(directio.read_chunks(fd, 0, LARGE + 10 * MiB, MiB)) == data


# -- through a real server and client ------------------------------------------------------


def stored(server: ServerProcess, *parts: str) -> Path:
    return server.root.joinpath(*parts)


def test_a_large_upload_goes_around_the_servers_page_cache_and_comes_back_whole(
    server: ServerProcess, client: ArtifactClient, tmp_path: Path, prefix: str
) -> None:
    digest = write_random(tmp_path / "model.bin", LARGE)
    client.log_artifact(tmp_path / "model.bin", prefix)
    assert cached(stored(server, prefix, "model.bin")) < 0.2
    out = client.download_artifacts(f"{prefix}/model.bin", str(tmp_path / "out"))
    assert cached(stored(server, prefix, "model.bin")) < 0.2, "the server's read filled the cache"
    assert cached(Path(out)) < 0.2, "the client's download went through the page cache"
    assert sha256_of(Path(out)) == digest


def test_range_reads_of_a_large_file_at_unaligned_offsets(
    client: ArtifactClient, stub: pb_grpc.ArtifactServiceStub, tmp_path: Path, prefix: str
) -> None:
    write_random(tmp_path / "r.bin", LARGE)
    client.log_artifact(tmp_path / "r.bin", prefix)
    body = (tmp_path / "r.bin").read_bytes()
    for offset, limit in ((0, 0), (12345, 9 * MiB + 1), (LARGE - 9 * MiB - 3, 0)):
        stream = stub.DownloadArtifact(
            pb.DownloadArtifactRequest(path=f"{prefix}/r.bin", offset=offset, limit=limit),
            timeout=60,
        )
        received = b"".join(message.data for message in stream)
        assert received == body[offset : offset + limit if limit else None], (offset, limit)


def test_without_direct_io_large_files_use_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run", "--no-direct-io")
    try:
        digest = write_random(tmp_path / "model.bin", LARGE)
        monkeypatch.setenv("ARTIFACTD_DIRECT_IO", "false")
        with ArtifactClient(server.target, settings=ClientSettings.from_env()) as client:
            client.log_artifact(tmp_path / "model.bin", "p")
            assert cached(stored(server, "p", "model.bin")) > 0.9
            out = client.download_artifacts("p/model.bin", str(tmp_path / "out"))
        assert cached(Path(out)) > 0.9
        assert sha256_of(Path(out)) == digest
    finally:
        assert server.stop() == 0, server.log_text()


def test_the_client_setting_takes_only_a_yes_or_a_no(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in (("", True), ("0", False), ("off", False), ("YES", True)):
        monkeypatch.setenv("ARTIFACTD_DIRECT_IO", raw)
        assert ClientSettings.from_env().direct_io is expected
    monkeypatch.setenv("ARTIFACTD_DIRECT_IO", "maybe")
    with pytest.raises(InvalidArgument, match="ARTIFACTD_DIRECT_IO"):
        ClientSettings.from_env()
