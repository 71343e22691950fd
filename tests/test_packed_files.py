"""Small files several to a message (LogArtifactsRequest.files, accept_packed_files) and the
group commit behind LogArtifacts, against a real server process.

Packing and grouping are performance work; what these tests hold is that they change nothing
a user relies on: each file is still checked and published atomically in stream order, a bad
file fails alone, a malformed packed message ends the call without publishing a byte of the
file it interrupts, and downloads deliver the same tree whether packed or not.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.client.client import _TreeDownload
from artifactd.client.localfiles import Destination
from artifactd.client.progress import NoProgress
from artifactd.protocol.errors import DataLoss, InvalidArgument
from artifactd.protocol.paths import ROOT, parse
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd_server.domain import batches
from artifactd_server.domain.scopes import Scope
from artifactd_server.domain.uploads import FileEvent, Sealed
from artifactd_server.storage import group_sync
from artifactd_server.storage.base import Upload
from artifactd_server.storage.local import LocalStorage

from conftest import stored_files, visible_files, write_random
from servers import ServerProcess

KiB = 1024
OK = 0


def packed(path: str, data: bytes, **finish: str) -> pb.PackedUpload:
    return pb.PackedUpload(
        header=pb.UploadHeader(path=path, size=len(data)), data=data,
        finish=pb.UploadFinish(**finish),
    )  # fmt: skip


def code(status: grpc.StatusCode) -> int:
    return int(status.value[0])


def test_the_server_advertises_packed_files(stub: pb_grpc.ArtifactServiceStub) -> None:
    assert stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10).packed_files


def test_packed_files_are_checked_and_published_one_by_one_in_stream_order(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    good = hashlib.sha256(b"two").hexdigest()
    messages = [
        pb.LogArtifactsRequest(files=[
            packed(f"{prefix}/a.bin", b"one"),
            packed(f"{prefix}/b.bin", b"two", sha256=good),
            packed(f"{prefix}/bad.bin", b"three", sha256="0" * 64),  # fails alone
            packed(f"{prefix}/../out.bin", b"four"),  # refused by the path grammar
        ]),
        # an unpacked file between packed ones, in several messages
        pb.LogArtifactsRequest(header=pb.UploadHeader(path=f"{prefix}/split.bin"), data=b"ab"),
        pb.LogArtifactsRequest(data=b"cd", finish=pb.UploadFinish()),
        pb.LogArtifactsRequest(files=[
            packed(f"{prefix}/f", b"a file"),
            packed(f"{prefix}/f/g", b"below a file"),  # `f` is published first: refused
            packed(f"{prefix}/a.bin", b"latest"),  # a path again: the later version wins
        ]),
    ]  # fmt: skip
    results = stub.LogArtifacts(iter(messages), timeout=30).results
    assert [(r.path, r.code) for r in results] == [
        (f"{prefix}/a.bin", OK),
        (f"{prefix}/b.bin", OK),
        (f"{prefix}/bad.bin", code(grpc.StatusCode.DATA_LOSS)),
        (f"{prefix}/../out.bin", code(grpc.StatusCode.INVALID_ARGUMENT)),
        (f"{prefix}/split.bin", OK),
        (f"{prefix}/f", OK),
        (f"{prefix}/f/g", code(grpc.StatusCode.FAILED_PRECONDITION)),
        (f"{prefix}/a.bin", OK),
    ]
    root = server.root / prefix
    assert (root / "a.bin").read_bytes() == b"latest"
    assert (root / "b.bin").read_bytes() == b"two"
    assert (root / "split.bin").read_bytes() == b"abcd"
    assert (root / "f").read_bytes() == b"a file"
    assert results[1].file.sha256 == good
    assert sorted(visible_files(root)) == ["a.bin", "b.bin", "f", "split.bin"]


def test_a_file_waits_for_every_waiting_file_that_names_one_of_its_directories(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, server: ServerProcess
) -> None:
    """However deep below a file still waiting to be published, and whichever of two waiting
    files of one path: the later file sees them published first. A file that failed never
    waits, so a file below its name is stored."""
    messages = [
        pb.LogArtifactsRequest(files=[
            packed(f"{prefix}/x", b"x"),
            packed(f"{prefix}/x/y/z", b"three levels below a file"),
            packed(f"{prefix}/bad", b"b", sha256="0" * 64),
            packed(f"{prefix}/bad/ok", b"below a failed file"),
            packed(f"{prefix}/twice", b"1"),
            packed(f"{prefix}/twice", b"2"),
            packed(f"{prefix}/twice/below", b"below a path sent twice"),
        ]),
    ]  # fmt: skip
    results = stub.LogArtifacts(iter(messages), timeout=30).results
    refused = code(grpc.StatusCode.FAILED_PRECONDITION)
    assert [(r.path, r.code) for r in results] == [
        (f"{prefix}/x", OK),
        (f"{prefix}/x/y/z", refused),
        (f"{prefix}/bad", code(grpc.StatusCode.DATA_LOSS)),
        (f"{prefix}/bad/ok", OK),
        (f"{prefix}/twice", OK),
        (f"{prefix}/twice", OK),
        (f"{prefix}/twice/below", refused),
    ]
    root = server.root / prefix
    assert (root / "x").read_bytes() == b"x"
    assert (root / "bad" / "ok").read_bytes() == b"below a failed file"
    assert (root / "twice").read_bytes() == b"2"


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        pytest.param(
            lambda p: [
                pb.LogArtifactsRequest(header=pb.UploadHeader(path=f"{p}/half.bin"), data=b"x"),
                pb.LogArtifactsRequest(files=[packed(f"{p}/inside.bin", b"y")]),
            ],
            "before the previous file's finish",
            id="packed files inside a file being sent",
        ),
        pytest.param(
            lambda p: [
                pb.LogArtifactsRequest(
                    header=pb.UploadHeader(path=f"{p}/own.bin"),
                    files=[packed(f"{p}/inside.bin", b"y")],
                )
            ],
            "sets no header, data or finish",
            id="packed files beside a header",
        ),
        pytest.param(
            lambda p: [
                pb.LogArtifactsRequest(
                    files=[pb.PackedUpload(header=pb.UploadHeader(path=f"{p}/x"), data=b"y")]
                )
            ],
            "needs its header and its finish",
            id="a packed file without its finish",
        ),
        pytest.param(
            lambda p: [pb.LogArtifactsRequest(files=[pb.PackedUpload(data=b"y")])],
            "needs its header and its finish",
            id="a packed file without its header",
        ),
    ],
)
def test_malformed_packed_messages_end_the_call_and_publish_nothing_they_interrupt(
    stub: pb_grpc.ArtifactServiceStub,
    prefix: str,
    server: ServerProcess,
    messages: object,
    says: str,
) -> None:
    stub.LogArtifacts(iter([pb.LogArtifactsRequest(files=[packed(f"{prefix}/before.bin", b"0")])]))
    with pytest.raises(grpc.RpcError) as err:
        stub.LogArtifacts(iter(messages(prefix)), timeout=30)  # type: ignore[operator]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (err.value.details() or "")
    assert visible_files(server.root / prefix) == ["before.bin"]


def test_the_client_packs_small_files_and_streams_large_ones_in_one_directory(
    client: ArtifactClient, prefix: str, tmp_path: Path, server: ServerProcess
) -> None:
    """Sizes around the packing limit, an empty file, a file larger than a message and a
    nested directory: each stored bit-identical, listed with its digest, and downloaded back
    (packed) bit-identical."""
    src = tmp_path / "src"
    sizes = {"empty": 0, "one": 1, "at-limit": 256 * KiB, "over-limit": 256 * KiB + 1}
    sizes |= {"big": 3 * 1024 * KiB + 5, "deep/er/small": 700}
    sizes |= {f"many/{n:03d}": 16 * KiB + n for n in range(150)}
    digests = {name: write_random(src / name, size) for name, size in sizes.items()}
    stored = client.log_artifacts(src, f"{prefix}/tree")
    assert {info.path.removeprefix(f"{prefix}/tree/"): info.sha256 for info in stored} == digests
    for name, digest in digests.items():
        data = (server.root / prefix / "tree" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
    out = client.download_artifacts(f"{prefix}/tree", tmp_path / "out")
    for name, digest in digests.items():
        data = (Path(out) / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
    assert not [name for name in visible_files(server.root / prefix) if "artifactd-" in name]


def download_messages(
    stub: pb_grpc.ArtifactServiceStub, path: str, accept: bool
) -> list[pb.DownloadArtifactsResponse]:
    request = pb.DownloadArtifactsRequest(path=path, accept_packed_files=accept)
    return list(stub.DownloadArtifacts(request, timeout=30))


def tree_of(messages: list[pb.DownloadArtifactsResponse]) -> Iterator[tuple[str, bool, bytes]]:
    """(path, is_dir, bytes) per entry, whichever way the stream carried them."""
    current: list[object] | None = None
    for message in messages:
        for file in message.files:
            if current is not None:
                yield tuple(current)  # type: ignore[misc]
                current = None
            yield file.file.path, file.file.is_dir, file.data
        if message.HasField("file"):
            if current is not None:
                yield tuple(current)  # type: ignore[misc]
            current = [message.file.path, message.file.is_dir, b""]
        if message.data:
            assert current is not None
            current[2] = bytes(current[2]) + message.data  # type: ignore[operator]
    if current is not None:
        yield tuple(current)  # type: ignore[misc]


def test_packed_downloads_carry_the_same_tree_in_fewer_messages(
    stub: pb_grpc.ArtifactServiceStub, client: ArtifactClient, prefix: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for n in range(200):
        write_random(src / f"small/{n:03d}", 4 * KiB)
    write_random(src / "large.bin", 600 * KiB)  # above the packing limit: streamed
    (src / "empty-dir").mkdir()
    client.log_artifacts(src, prefix)
    plain = download_messages(stub, prefix, accept=False)
    packed_stream = download_messages(stub, prefix, accept=True)
    assert not any(message.files for message in plain)
    assert sorted(tree_of(packed_stream)) == sorted(tree_of(plain))
    assert len(packed_stream) < len(plain) / 20, (len(packed_stream), len(plain))
    assert all(message.ByteSize() < 2 * 1024 * KiB for message in packed_stream)
    assert [f.file.is_dir for message in packed_stream for f in message.files].count(True) == 0


# -- the group commit, in process: faults no real disk produces on demand ---------------------


def sealed_events(
    storage: LocalStorage, names: list[str], contents: list[bytes] | None = None
) -> list[FileEvent]:
    """Files received and checked, waiting to be published, as a LogArtifacts stream makes;
    each holds its name unless `contents` says otherwise."""
    scope = Scope(storage=storage, base=ROOT)
    events = []
    for index, name in enumerate(names):
        path = parse(name)
        data = contents[index] if contents is not None else name.encode()
        upload = storage.start_upload(path)
        upload.write(data)
        digest = hashlib.sha256(data).hexdigest()
        sealed = Sealed(upload, digest, True, None, path, storage, len(data))
        events.append(FileEvent(name, sealed=sealed, scope=scope))
    return events


def descriptors_under(root: Path) -> list[str]:
    """What this process holds open below `root` (the files being uploaded there)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue  # closed while listed
        if target.startswith(f"{root}/"):
            held.append(target)
    return held


def test_a_group_is_made_durable_by_one_syncfs(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert group_sync.available(str(tmp_path)), "this machine's disk should allow group sync"
    names = [f"d/f{n:02d}" for n in range(2 * batches.GROUP_FILES + 5)]
    with (
        ThreadPoolExecutor(2) as pool,
        mock.patch.object(group_sync, "sync", wraps=group_sync.sync) as syncs,
    ):
        publisher = batches.BatchPublisher(pool)
        for event in sealed_events(storage, names):
            publisher.add(event)
        publisher.finish()
    assert [o.error for o in publisher.outcomes] == [None] * len(names)
    assert syncs.call_count == 3  # one per group of 32, not one per file
    assert stored_files(tmp_path) == sorted(names)
    storage.close()  # its owner mark
    assert descriptors_under(tmp_path) == []


def test_a_failed_syncfs_fails_its_whole_group_and_leaves_nothing(tmp_path: Path) -> None:
    """A write-back error reported by syncfs: no file of the group may be published (any of
    them may be the one whose bytes did not reach the disk), each is reported with the error,
    and no temporary file or descriptor stays."""
    storage = LocalStorage(tmp_path)
    names = [f"f{n}" for n in range(5)]
    failure = OSError(errno.EIO, os.strerror(errno.EIO))
    with ThreadPoolExecutor(2) as pool, mock.patch.object(group_sync, "sync", side_effect=failure):
        publisher = batches.BatchPublisher(pool)
        for event in sealed_events(storage, names):
            publisher.add(event)
        publisher.finish()
    errors = [o.error for o in publisher.outcomes]
    assert all(e is not None and e.code == grpc.StatusCode.UNAVAILABLE for e in errors)
    assert "Input/output error" in str(errors[0])
    assert stored_files(tmp_path) == []
    storage.close()  # its owner mark
    assert descriptors_under(tmp_path) == []


def test_groups_publish_in_arrival_order_on_a_pool_of_many_threads(tmp_path: Path) -> None:
    """Groups are prepared on the pool concurrently: a later group whose preparation ends
    first is still published after the earlier one, so a path sent twice ends with the later
    bytes."""
    storage = LocalStorage(tmp_path)
    size = batches.GROUP_FILES
    names = ["same", *(f"a/f{n:02d}" for n in range(size - 1)), "same", "b/last"]
    contents = [b"first", *(name.encode() for name in names[1:size]), b"second", b"last"]
    prepare = storage.prepare_group
    calls: list[int] = []

    def first_group_slow(uploads: Sequence[tuple[Upload, str]]) -> list[BaseException | None]:
        calls.append(len(uploads))
        if len(calls) == 1:
            time.sleep(0.5)  # the second group's preparation is over long before
        return prepare(uploads)

    with (
        ThreadPoolExecutor(4) as pool,
        mock.patch.object(storage, "prepare_group", side_effect=first_group_slow),
    ):
        publisher = batches.BatchPublisher(pool)
        for event in sealed_events(storage, names, contents):
            publisher.add(event)
        publisher.finish()
    assert calls == [size, 2]
    assert [o.error for o in publisher.outcomes] == [None] * len(names)
    assert [o.path for o in publisher.outcomes] == names
    assert (tmp_path / "same").read_bytes() == b"second"
    storage.close()  # its owner mark
    assert descriptors_under(tmp_path) == []


def test_a_group_after_one_that_crashed_publishes_nothing(tmp_path: Path) -> None:
    """A crash while settling a group (no per-file error: its preparation itself raised)
    fails the stream; the groups after it, already prepared on the pool, publish nothing and
    hold nothing."""
    storage = LocalStorage(tmp_path)
    names = [f"d/f{n:03d}" for n in range(3 * batches.GROUP_FILES)]
    prepare = storage.prepare_group

    def first_group_crashes(uploads: Sequence[tuple[Upload, str]]) -> list[BaseException | None]:
        if any(str(upload.path) == names[0] for upload, _ in uploads):
            time.sleep(0.3)  # the later groups are prepared and waiting by then
            raise RuntimeError("crash while preparing")
        return prepare(uploads)

    with (
        ThreadPoolExecutor(4) as pool,
        mock.patch.object(storage, "prepare_group", side_effect=first_group_crashes),
    ):
        publisher = batches.BatchPublisher(pool)
        events = sealed_events(storage, names)
        with pytest.raises(RuntimeError, match="crash while preparing"):
            try:  # as LogArtifacts does: `finish` however the stream ended
                for event in events:
                    publisher.add(event)
            finally:
                publisher.finish()
    assert stored_files(tmp_path) == []
    storage.close()  # its owner mark
    assert descriptors_under(tmp_path) == []


def test_group_sync_is_used_only_where_it_is_as_durable_as_fsync(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "40 22 0:50 / /mnt/nfs rw - nfs4 server:/export rw,vers=4.2\n"
        "41 22 0:51 / /mnt/with\\040space rw - xfs /dev/vdb rw\n"
    )
    kind = group_sync.filesystem_type
    assert kind("/srv/artifacts", str(mountinfo)) == "ext4"
    assert kind("/mnt/nfs/artifacts", str(mountinfo)) == "nfs4"
    assert kind("/mnt/nfsother", str(mountinfo)) == "ext4"  # a prefix of a name is not a parent
    assert kind("/mnt/with space/x", str(mountinfo)) == "xfs"
    assert "nfs4" not in group_sync.FILESYSTEMS
    with mock.patch.object(group_sync, "filesystem_type", return_value="nfs4"):
        assert not group_sync.available(str(tmp_path))
        storage = LocalStorage(tmp_path)  # falls back to an fsync per file
    with ThreadPoolExecutor(1) as pool, mock.patch.object(group_sync, "sync") as syncs:
        publisher = batches.BatchPublisher(pool)
        for event in sealed_events(storage, ["a", "b", "c"]):
            publisher.add(event)
        publisher.finish()
    assert syncs.call_count == 0
    assert stored_files(tmp_path) == ["a", "b", "c", "mountinfo"]


def test_a_packed_file_that_fails_verification_is_never_published(tmp_path: Path) -> None:
    """The client writes packed files on a writer thread: a file whose bytes do not match the
    digest the server announced must still fail the download and leave no trace, and a path
    the grammar refuses must be refused before anything is written. (A real server does not
    send a wrong digest: the messages are made here.)"""

    def entry(path: str, data: bytes, digest: str | None = None) -> pb.PackedDownload:
        info = pb.FileInfo(
            path=path, file_size=len(data), sha256=digest or hashlib.sha256(data).hexdigest()
        )
        return pb.PackedDownload(file=info, data=data)

    files = [entry(f"d/{n:02d}", b"x" * n) for n in range(80)]
    files[40] = entry("d/40", b"tampered", hashlib.sha256(b"original").hexdigest())
    tree = _TreeDownload(parse("d"), Destination(str(tmp_path)), NoProgress(), False)
    with pytest.raises(DataLoss, match="sha256"):
        try:
            tree.receive(pb.DownloadArtifactsResponse(files=files))
            tree.finish()
        finally:
            tree.close()
    written = os.listdir(tmp_path / "d")
    assert "40" not in written
    assert not [name for name in written if not name.isdigit()], "no temporary file stays"
    for name in written:
        assert (tmp_path / "d" / name).read_bytes() == b"x" * int(name)

    tree = _TreeDownload(parse("d"), Destination(str(tmp_path / "2")), NoProgress(), False)
    with pytest.raises(InvalidArgument):
        try:
            tree.receive(pb.DownloadArtifactsResponse(files=[entry("d/../../escape", b"x")]))
        finally:
            tree.close()
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path.parent / "escape").exists()
