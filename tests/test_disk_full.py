"""A real disk fills up under the server: the user's view, through the CLI and the client library.

The server's root is a 32 MiB tmpfs (`small_disk`) filled by `fill`, so the kernel's own ENOSPC
hits whatever write reaches the end of the space. For a single upload, an overwrite, a resumable
upload and a directory log this checks what the issue promises (and docs/reliability.md
documents): the call fails with RESOURCE_EXHAUSTED and a message saying the destination is out of
space; nothing of the failed file is visible or left on disk; what was there stays
bit-identical and readable; once space is freed the same command succeeds. The lower-level cases
(direct I/O on and off, a batch's per-file result, a download onto a full client disk) are in
tests/test_hardening.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.protocol.errors import ResourceExhausted
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from waiting import wait_for

from conftest import temp_upload_files, write_random
from servers import ServerProcess, run_cli, start_server
from small_disk import MiB, fill

OUT_OF_SPACE = "no space left"
KiB = 1024


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def full_disk_server(small_disk: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(small_disk / "store", tmp_path / "run")
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_text()
    assert "Traceback" not in server.log_text()


def stored_files(root: Path) -> dict[str, str]:
    """Every published file under `root`: path -> sha256. Not the server's own files (temporary
    uploads, owner locks: names starting with `.artifactd-`)."""
    return {
        str(p.relative_to(root)): sha(p)
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".artifactd-") for part in p.relative_to(root).parts)
    }


def test_the_cli_says_out_of_space_keeps_everything_and_succeeds_once_space_is_freed(
    full_disk_server: ServerProcess, small_disk: Path, tmp_path: Path
) -> None:
    server, root = full_disk_server, small_disk / "store"
    earlier, model_v1, model_v2, big = (tmp_path / n for n in ("earlier.bin", "v1", "v2", "big"))
    write_random(earlier, 1 * MiB)
    write_random(model_v1, 3 * MiB)
    write_random(model_v2, 3 * MiB)
    write_random(big, 12 * MiB)
    with ArtifactClient(server.target) as client:
        client.log_artifact(earlier, "kept")
        client.log_artifact(model_v1, "kept", file_name="model.bin")
        before = stored_files(root)
        filler = fill(small_disk, leave=2 * MiB)

        # a new file that does not fit, as a user runs it
        done = run_cli("artifacts", "log", str(big), "--artifact-path", "new",
                       "--server", server.target)  # fmt: skip
        assert done.returncode != 0
        assert OUT_OF_SPACE in done.stderr and "artifact store" in done.stderr, done.stderr
        assert "internal" not in done.stderr.lower(), done.stderr

        # an overwrite that does not fit never half-replaces the old version
        with pytest.raises(ResourceExhausted, match=OUT_OF_SPACE):
            client.log_artifact(model_v2, "kept", file_name="model.bin")

        # nothing of either is visible or left; what was there is intact and readable
        assert stored_files(root) == before
        assert not temp_upload_files(root)
        assert [e.path for e in client.list_artifacts("")] == ["kept"]
        assert {e.path for e in client.list_artifacts("kept")} == {"kept/earlier.bin",
                                                                    "kept/model.bin"}  # fmt: skip
        fetched = client.download_artifacts("kept/model.bin", dst_path=str(tmp_path / "read"))
        assert sha(Path(fetched)) == sha(model_v1)

        # space freed: the same command and the same overwrite succeed
        filler.unlink()
        again = run_cli("artifacts", "log", str(big), "--artifact-path", "new",
                        "--server", server.target)  # fmt: skip
        assert again.returncode == 0, again.stderr
        client.log_artifact(model_v2, "kept", file_name="model.bin")
    assert sha(root / "new/big") == sha(big)
    assert sha(root / "kept/model.bin") == sha(model_v2)
    assert sha(root / "kept/earlier.bin") == sha(earlier)
    assert not temp_upload_files(root)


def test_a_resumable_upload_keeps_what_it_holds_and_continues_once_space_is_freed(
    full_disk_server: ServerProcess, small_disk: Path
) -> None:
    """Documented: a resumable upload that runs out of space mid-stream keeps the bytes it holds
    (until the session expires, --multipart-session-ttl), answers their count to
    QueryWriteStatus, and continues from there once space is freed; nothing is visible until
    the whole file is verified. One whose declared size cannot fit is refused at the start with
    nothing kept (the first test's case)."""
    server, root = full_disk_server, small_disk / "store"
    data = os.urandom(20 * MiB)
    path = "models/weights.bin"
    filler: list[Path] = []

    def filling_stream(upload_id: str) -> Iterator[pb.LogArtifactRequest]:
        yield pb.LogArtifactRequest(header=pb.UploadHeader(upload_id=upload_id, offset=0))
        for position in range(0, len(data), 256 * 1024):
            if position == 12 * MiB:  # the server has written past 8 MiB: fill what is left
                assert wait_for(lambda: any(os.path.getsize(t) > 8 * MiB
                                            for t in temp_upload_files(root)))  # fmt: skip
                filler.append(fill(small_disk))
            yield pb.LogArtifactRequest(data=data[position : position + 256 * 1024])
        yield pb.LogArtifactRequest(finish=pb.UploadFinish())

    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ArtifactServiceStub(channel)
        started = stub.StartResumableUpload(
            pb.StartResumableUploadRequest(
                path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest()
            ),
            timeout=30,
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.LogArtifact(filling_stream(started.upload_id), timeout=60)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert OUT_OF_SPACE in (caught.value.details() or "")
        status = stub.QueryWriteStatus(
            pb.QueryWriteStatusRequest(upload_id=started.upload_id), timeout=30
        )
        held = status.committed_size
        assert 8 * MiB <= held < len(data)
        assert not (root / path).exists() and not stored_files(root)
        kept = temp_upload_files(root)
        assert kept and sum(os.path.getsize(p) for p in kept) == held

        filler[0].unlink()
        rest = [pb.LogArtifactRequest(header=pb.UploadHeader(upload_id=started.upload_id,
                                                             offset=held))]  # fmt: skip
        rest += [pb.LogArtifactRequest(data=data[p : p + MiB]) for p in range(held, len(data), MiB)]
        rest.append(pb.LogArtifactRequest(finish=pb.UploadFinish()))
        done = stub.LogArtifact(iter(rest), timeout=60)
    assert done.file.sha256 == hashlib.sha256(data).hexdigest()
    assert (root / path).read_bytes() == data
    assert not temp_upload_files(root)
    print(f"\nresumable: {held / MiB:.2f} MiB held at ENOSPC, continued from there")


@pytest.mark.parametrize(
    ("file_size", "count"),
    [(1 * MiB, 16), (256 * KiB, 48)],  # the smaller are sent whole (packed), checked at the write
)
def test_a_directory_log_publishes_whole_files_up_to_the_one_that_did_not_fit(
    full_disk_server: ServerProcess, small_disk: Path, tmp_path: Path, file_size: int, count: int
) -> None:
    """Documented: a directory log publishes file by file, in order, each one atomic and
    verified, and each refused or published on its own: when the disk fills, the files before
    the failure stay published and whole, no file is partly there, the call raises the
    failures' own error (ResourceExhausted) listing them, and running the same log again
    publishes the rest. With files of one size, what is published is a prefix of the tree.
    Files under PRECHECKED_FROM are not compared with the free space before their bytes: the
    write refuses them, with the same error."""
    server, root = full_disk_server, small_disk / "store"
    tree = tmp_path / "tree"
    digests = {f"part-{i:02d}.bin": write_random(tree / f"part-{i:02d}.bin", file_size)
               for i in range(count)}  # fmt: skip
    with ArtifactClient(server.target) as client:
        filler = fill(small_disk, leave=6 * MiB)
        with pytest.raises(ResourceExhausted, match=OUT_OF_SPACE):
            client.log_artifacts(tree, "dataset")
        published = stored_files(root)
        names = sorted(p.removeprefix("dataset/") for p in published)
        assert names == sorted(digests)[: len(names)], "not a prefix of the tree in order"
        assert 0 < len(names) < len(digests)
        for path, digest in published.items():
            assert digest == digests[path.removeprefix("dataset/")], path
        assert not temp_upload_files(root)

        filler.unlink()
        client.log_artifacts(tree, "dataset")
    assert stored_files(root) == {f"dataset/{name}": d for name, d in digests.items()}
    assert not temp_upload_files(root)
    print(f"\ndirectory log: {len(names)} of {len(digests)} files published at ENOSPC")
