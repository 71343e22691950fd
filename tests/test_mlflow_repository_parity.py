"""The MLflow plugin behaves as MLflow's own artifact repositories do.

Every scenario runs twice: against MLflow's `LocalArtifactRepository` (a `file://` directory,
MLflow's reference behaviour) and against `ArtifactdArtifactRepository` on a real artifactd
server, with the same expected results. The scenarios are the behaviours MLflow's own
artifact-repository tests pin down (listing, logging into sub-directories, downloads with and
without a destination, hidden files, deletes, trace data); MLflow's test files are not shipped in
its distributions, so they are restated here. Where artifactd refuses on purpose, the last tests
say what differs and check that the error names the character and the rule.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException, MlflowTraceDataCorrupted, MlflowTraceDataNotFound
from mlflow.protos import databricks_pb2
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.utils.file_utils import path_to_local_file_uri

from artifactd.mlflow import ArtifactdArtifactRepository
from test_client_resilience import kill_and_restart_mid_download, reserved_port

from conftest import sha256_of, visible_files, write_random
from servers import ServerProcess, start_server

KINDS = ("mlflow-local", "artifactd")


@pytest.fixture(params=KINDS)
def repo(
    request: pytest.FixtureRequest, server: ServerProcess, prefix: str, tmp_path: Path
) -> Iterator[ArtifactRepository]:
    if request.param == "mlflow-local":
        root = tmp_path / "local-root"
        root.mkdir()
        yield LocalArtifactRepository(path_to_local_file_uri(str(root)))
    else:
        repository = ArtifactdArtifactRepository(f"artifactd://{server.target}/{prefix}/repo")
        yield repository
        repository.close()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A local tree to log: subdir/{a.txt, b.txt, nested/c.txt}."""
    root = tmp_path / "src"
    (root / "subdir" / "nested").mkdir(parents=True)
    (root / "subdir" / "a.txt").write_text("A")
    (root / "subdir" / "b.txt").write_text("B")
    (root / "subdir" / "nested" / "c.txt").write_text("C")
    (root / "test.txt").write_text("hello world!")
    return root


def listed(repo: ArtifactRepository, path: str | None = None) -> list[tuple[str, bool, int | None]]:
    return sorted((f.path, f.is_dir, f.file_size) for f in repo.list_artifacts(path))


def test_an_empty_repository_lists_nothing(repo: ArtifactRepository) -> None:
    assert repo.list_artifacts() == []
    assert repo.list_artifacts("missing") == []


def test_log_artifact_then_list(repo: ArtifactRepository, src: Path) -> None:
    repo.log_artifact(str(src / "test.txt"))
    assert listed(repo) == [("test.txt", False, 12)]
    assert repo.list_artifacts("test.txt") == []  # a file lists as nothing


@pytest.mark.parametrize("with_destination", [False, True], ids=["temp-dir", "dst_path"])
def test_download_a_file_returns_an_absolute_path_under_the_destination(
    repo: ArtifactRepository, src: Path, tmp_path: Path, with_destination: bool
) -> None:
    repo.log_artifact(str(src / "test.txt"))
    dst = tmp_path / "dst" if with_destination else None
    if dst is not None:
        dst.mkdir()
    got = repo.download_artifacts("test.txt", str(dst) if dst else None)
    assert os.path.isabs(got)
    if dst is not None:
        assert got == str(dst / "test.txt")
    assert Path(got).read_text() == "hello world!"


@pytest.mark.parametrize("subdir", ["aaa", "aaa/bbb", "aaa/bbb/ccc/ddd"])
def test_logged_into_a_sub_directory_and_downloaded_from_it(
    repo: ArtifactRepository, src: Path, subdir: str
) -> None:
    repo.log_artifact(str(src / "test.txt"), artifact_path=subdir)
    downloaded = repo.download_artifacts(subdir)
    assert os.listdir(downloaded) == ["test.txt"]
    assert Path(downloaded, "test.txt").read_text() == "hello world!"
    assert Path(repo.download_artifacts(f"{subdir}/test.txt")).read_text() == "hello world!"
    top = subdir.split("/", maxsplit=1)[0]
    assert listed(repo) == [(top, True, None)]


def test_a_logged_directory_keeps_its_layout(repo: ArtifactRepository, src: Path) -> None:
    repo.log_artifacts(str(src / "subdir"))
    assert listed(repo) == [("a.txt", False, 1), ("b.txt", False, 1), ("nested", True, None)]
    assert listed(repo, "nested") == [("nested/c.txt", False, 1)]
    assert Path(repo.download_artifacts("a.txt")).read_text() == "A"
    assert Path(repo.download_artifacts("nested/c.txt")).read_text() == "C"
    whole = Path(repo.download_artifacts(""))
    assert sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file()) == [
        "a.txt",
        "b.txt",
        "nested/c.txt",
    ]


def test_hidden_files_are_logged(repo: ArtifactRepository, tmp_path: Path) -> None:
    (tmp_path / ".mystery").write_text("42")
    repo.log_artifact(str(tmp_path / ".mystery"))
    assert Path(repo.download_artifacts(".mystery")).read_text() == "42"


def test_logging_again_replaces_the_file(repo: ArtifactRepository, tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text("one")
    repo.log_artifact(str(tmp_path / "v.txt"), "d")
    (tmp_path / "v.txt").write_text("second")
    repo.log_artifact(str(tmp_path / "v.txt"), "d")
    assert Path(repo.download_artifacts("d/v.txt")).read_text() == "second"
    assert listed(repo, "d") == [("d/v.txt", False, 6)]


def test_deletes(repo: ArtifactRepository, src: Path) -> None:
    repo.log_artifacts(str(src / "subdir"), "x")
    repo.delete_artifacts("nonexistent")  # idempotent
    repo.delete_artifacts("x/nested")
    assert listed(repo, "x") == [("x/a.txt", False, 1), ("x/b.txt", False, 1)]
    repo.delete_artifacts("x")
    assert repo.list_artifacts("x") == []


def test_a_directory_whose_last_file_was_deleted_downloads_as_an_empty_directory(
    repo: ArtifactRepository, src: Path, tmp_path: Path
) -> None:
    repo.log_artifact(str(src / "test.txt"), "keep/emptied")
    repo.log_artifact(str(src / "test.txt"), "keep")
    repo.delete_artifacts("keep/emptied/test.txt")
    dst = tmp_path / "dst"
    dst.mkdir()
    got = repo.download_artifacts("keep/emptied", str(dst))
    assert got == str(dst / "keep" / "emptied")
    assert os.path.isdir(got)
    assert os.listdir(got) == []


def test_a_missing_path_cannot_be_downloaded(repo: ArtifactRepository, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    repo.log_artifact(str(tmp_path / "f"))
    with pytest.raises((MlflowException, OSError)):
        repo.download_artifacts("no/such/file.txt")


@pytest.mark.parametrize("bad", ["/", "//", "/tmp", "/bad_path", ".", "../terrible_path"])
def test_invalid_artifact_paths_are_refused(
    repo: ArtifactRepository, tmp_path: Path, bad: str
) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(MlflowException, match="Invalid artifact path") as err:
        repo.log_artifact(str(tmp_path / "f"), bad)
    if isinstance(repo, ArtifactdArtifactRepository):  # MLflow's local store says INTERNAL_ERROR
        assert err.value.error_code == databricks_pb2.ErrorCode.Name(
            databricks_pb2.INVALID_PARAMETER_VALUE
        )


def test_trace_data(repo: ArtifactRepository) -> None:
    with pytest.raises(MlflowTraceDataNotFound):
        repo.download_trace_data()
    repo.upload_trace_data("not json")
    with pytest.raises(MlflowTraceDataCorrupted):
        repo.download_trace_data()
    trace = {"spans": [], "request": {"q": 1}, "response": {"a": 2}}
    repo.upload_trace_data(json.dumps(trace))
    assert repo.download_trace_data() == trace


# -- where artifactd differs on purpose -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("what?.txt", "forbidden character '?'"),
        ("a;b.txt", "forbidden character ';'"),
        ("a#b.txt", "forbidden character '#'"),
        ("a\\b.txt", "forbidden character '\\\\'"),
        ("./x.txt", "the segment '.'"),
        ("d/../x.txt", "the segment '..'"),
    ],
)
def test_names_mlflow_accepts_but_artifactd_refuses_name_the_character_and_rule(
    server: ServerProcess, prefix: str, tmp_path: Path, name: str, rule: str
) -> None:
    repo = ArtifactdArtifactRepository(f"artifactd://{server.target}/{prefix}/repo")
    (tmp_path / "f").write_text("x")
    with pytest.raises(MlflowException, match="Invalid artifact path") as err:
        repo.log_artifact(str(tmp_path / "f"), name)
    assert rule in err.value.message, err.value.message
    repo.close()


# -- never a silently short file (mlflow/mlflow#8104) ---------------------------------------


def test_a_download_broken_mid_stream_resumes_and_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run", "--port", str(reserved_port()))
    digest = write_random(tmp_path / "weights.bin", 64 * 1024 * 1024)
    restarted: list[ServerProcess] = []
    repo = ArtifactdArtifactRepository(f"artifactd://{server.target}/m")
    try:
        repo.log_artifact(str(tmp_path / "weights.bin"))
        # the stream breaks at about 12% ...
        restarted = kill_and_restart_mid_download(
            monkeypatch, server, tmp_path / "run2", 8 * 1024 * 1024
        )
        dst = tmp_path / "dst"
        dst.mkdir()
        got = repo.download_artifacts("weights.bin", str(dst))
        assert restarted, "the server was restarted during the download"
        assert sha256_of(Path(got)) == digest  # ... and the download resumed to the whole file
    finally:
        repo.close()
        server.stop(signal.SIGKILL)
        for again in restarted:
            assert again.stop() == 0


def test_a_damaged_stored_file_fails_loudly_and_nothing_is_kept(
    server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    repo = ArtifactdArtifactRepository(f"artifactd://{server.target}/{prefix}")
    write_random(tmp_path / "w.bin", 4 * 1024 * 1024)
    repo.log_artifact(str(tmp_path / "w.bin"), "m")
    stored = server.root / prefix / "m" / "w.bin"
    before = stored.stat()
    with open(stored, "r+b") as fh:  # bit rot: same size, and the mtime put back
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(stored, ns=(before.st_atime_ns, before.st_mtime_ns))
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(MlflowException) as err:
        repo.download_artifacts("m/w.bin", str(dst))
    assert err.value.error_code in {
        databricks_pb2.ErrorCode.Name(databricks_pb2.DATA_LOSS),
        databricks_pb2.ErrorCode.Name(databricks_pb2.INVALID_STATE),
    }, err.value.message
    assert "w.bin" in err.value.message
    assert visible_files(dst) == []
    stored.unlink()  # the damaged file is this test's own doing; leave the shared root clean
    repo.close()


# -- streamed logging, no temporary copy -----------------------------------------------------


class _Breaking(io.RawIOBase):
    """A request body that fails after `good` bytes, as a dropped HTTP upload does."""

    def __init__(self, good: int) -> None:
        self.left = good

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        n = min(self.left, 65536 if size < 0 else size)
        self.left -= n
        return b"x" * n


def test_streamed_uploads_publish_whole_or_not_at_all(
    server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    repo = ArtifactdArtifactRepository(f"artifactd://{server.target}/{prefix}")
    payload = os.urandom(3 * 1024 * 1024 + 5)
    repo.log_artifact_from_stream(io.BytesIO(payload), "ignored/dir/w.bin", "s")
    assert Path(repo.download_artifacts("s/w.bin")).read_bytes() == payload

    async def body(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    asyncio.run(repo.log_artifact_from_async_stream(body(payload[::-1]), "r.bin", "s"))
    assert Path(repo.download_artifacts("s/r.bin")).read_bytes() == payload[::-1]

    with pytest.raises(ConnectionResetError):
        repo.log_artifact_from_stream(_Breaking(1_000_000), "broken.bin", "s")

    async def breaking_body() -> AsyncIterator[bytes]:
        yield b"y" * 500_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(repo.log_artifact_from_async_stream(breaking_body(), "broken2.bin", "s"))
    assert listed(repo, "s") == [("s/r.bin", False, len(payload)), ("s/w.bin", False, len(payload))]

    repo.upload_attachment("0b6c5f43-5d2a-4c2e-9f0e-2b7c1f7b9a10", b"attached")
    assert (
        Path(
            repo.download_artifacts("attachments/0b6c5f43-5d2a-4c2e-9f0e-2b7c1f7b9a10")
        ).read_bytes()
        == b"attached"
    )
    with pytest.raises(MlflowException, match="Invalid attachment path"):
        repo.upload_attachment("../escape", b"x")
    repo.close()
