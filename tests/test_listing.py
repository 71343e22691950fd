"""ListArtifacts pages really page: complete, ordered, no duplicates, tokens bound to a listing."""

from __future__ import annotations

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.protocol import errors
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from servers import ServerProcess


def make_tree(server: ServerProcess, prefix: str, files: int) -> list[str]:
    """Files written straight into the store: fast, and listing must cope with foreign files."""
    names = []
    for i in range(files):
        path = server.root / prefix / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(i))
        names.append(f"{prefix}/f{i:05d}.txt")
    return names


def pages(
    stub: pb_grpc.ArtifactServiceStub, path: str, page_size: int, recursive: bool = False
) -> list[list[str]]:
    out, token = [], ""
    while True:
        reply = stub.ListArtifacts(
            pb.ListArtifactsRequest(
                path=path, page_size=page_size, page_token=token, recursive=recursive
            ),
            timeout=30,
        )
        out.append([f.path for f in reply.files])
        token = reply.next_page_token
        if not token:
            return out


def test_pagination_over_more_than_a_thousand_entries(
    server: ServerProcess, stub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    names = make_tree(server, prefix, 2500)
    got = pages(stub, prefix, 1000)
    assert [len(p) for p in got] == [1000, 1000, 500]
    assert [n for p in got for n in p] == names
    default = pages(stub, prefix, 0)
    assert [n for p in default for n in p] == names


def test_recursive_pagination_follows_segment_order(
    server: ServerProcess, stub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    for rel in ("a/b/c.txt", "a/b.txt", "a-z.txt", "a/x/y/z.txt", "b.txt", "a/b/d/e.txt"):
        (server.root / prefix / rel).parent.mkdir(parents=True, exist_ok=True)
        (server.root / prefix / rel).write_text(rel)
    everything = [n for p in pages(stub, prefix, 1000, recursive=True) for n in p]
    expected = [
        "a", "a/b", "a/b/c.txt", "a/b/d", "a/b/d/e.txt", "a/b.txt", "a/x", "a/x/y",
        "a/x/y/z.txt", "a-z.txt", "b.txt",
    ]  # fmt: skip
    assert everything == [f"{prefix}/{e}" for e in expected]
    for size in (1, 2, 3, 5):
        paged = pages(stub, prefix, size, recursive=True)
        assert all(len(p) <= size for p in paged)
        assert [n for p in paged for n in p] == everything, f"page size {size}"


def test_entries_added_between_pages_cause_no_duplicates(
    server: ServerProcess, stub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    make_tree(server, prefix, 10)
    first = stub.ListArtifacts(pb.ListArtifactsRequest(path=prefix, page_size=5), timeout=10)
    (server.root / prefix / "a-early.txt").write_text("x")  # sorts before the page boundary
    second = stub.ListArtifacts(
        pb.ListArtifactsRequest(path=prefix, page_size=100, page_token=first.next_page_token),
        timeout=10,
    )
    seen = [f.path for f in first.files] + [f.path for f in second.files]
    assert len(seen) == len(set(seen)) == 10


def test_page_tokens_and_sizes_are_validated(
    server: ServerProcess, stub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    make_tree(server, f"{prefix}/one", 3)
    make_tree(server, f"{prefix}/two", 3)
    token = stub.ListArtifacts(
        pb.ListArtifactsRequest(path=f"{prefix}/one", page_size=1), timeout=10
    ).next_page_token
    assert token
    bad_requests = [
        pb.ListArtifactsRequest(path=f"{prefix}/two", page_size=1, page_token=token),
        pb.ListArtifactsRequest(
            path=f"{prefix}/one", page_size=1, page_token=token, recursive=True
        ),
        pb.ListArtifactsRequest(path=f"{prefix}/one", page_token="garbage!"),
        pb.ListArtifactsRequest(path=f"{prefix}/one", page_size=-1),
    ]
    for request in bad_requests:
        with pytest.raises(grpc.RpcError) as err:
            stub.ListArtifacts(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
    huge = stub.ListArtifacts(
        pb.ListArtifactsRequest(path=f"{prefix}/one", page_size=10**9), timeout=10
    )
    assert len(huge.files) == 3 and not huge.next_page_token


def test_listing_a_file_or_a_missing_path(
    client: ArtifactClient, server: ServerProcess, prefix: str
) -> None:
    make_tree(server, prefix, 1)
    with pytest.raises(errors.FailedPrecondition):
        client.list_artifacts(f"{prefix}/f00000.txt")
    with pytest.raises(errors.NotFound):
        client.list_artifacts(f"{prefix}/missing")


def test_listing_hides_temp_files_and_reports_sizes(
    client: ArtifactClient, server: ServerProcess, prefix: str
) -> None:
    make_tree(server, prefix, 2)
    (server.root / prefix / ".artifactd-upload-123").write_text("in flight")
    (server.root / prefix / "sub").mkdir()
    listed = client.list_artifacts(prefix)
    assert [(i.path, i.is_dir, i.file_size) for i in listed] == [
        (f"{prefix}/f00000.txt", False, 1), (f"{prefix}/f00001.txt", False, 1), (f"{prefix}/sub", True, 0),
    ]  # fmt: skip
    assert listed[0].sha256 is None, "written behind the server's back: digest unknown, not guessed"
