"""SIGKILL a real server at seeded random byte offsets of uploads, overwrites, directory logs and
resumable completions; after each restart every path holds the old version or the new one whole.

Why: the local backend publishes by writing a hidden temporary file, fsyncing it and renaming it
over the destination; the resumable path keeps its bytes under a reserved name and a session row
in the backend store. Single hand-picked kills (test_resumable.py) prove the recipe at a few
points; this harness proves it at many, chosen by a seeded generator so any failure reproduces:

    ARTIFACTD_CRASH_SEED=<seed printed by the failed run> pytest tests/test_crash_points.py

Each case is driven through the raw stub by a request generator that sends exactly its chosen
number of data bytes (or everything and the `finish` message, so the kill lands during commit)
and then blocks. Restarts cost about two seconds on a shared two-core machine, so the cases run
in small batches, concurrently: once every stream of a batch sits at its own offset, the server
is killed once (one SIGKILL, several crash points). After the restart on the same root and the
same SQLite store the harness checks, for every path the batch touched, on disk and through the
server: the old content or the new content, whole, by sha256 (absent only where there was no
old version); a path whose upload was acknowledged must hold the new one. A resumable upload
that was not published must still be resumable from a prefix of what was sent, and finishing it
must publish the new content. Start-up recovery must remove every temporary file that the
killed process owned, and its owner mark.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from artifactd.protocol.paths import RESERVED_PREFIX
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from conftest import sha256_of, temp_upload_files
from servers import ServerProcess, start_server

KiB = 1024
CHUNK = 64 * KiB
SEED = int(os.environ.get("ARTIFACTD_CRASH_SEED", "2323"))
"""The default is fixed so CI is reproducible; any failure prints the seed it ran with."""
CASES = int(os.environ.get("ARTIFACTD_CRASH_CASES", "64"))
KINDS = ("new", "overwrite", "directory", "resumable")
AT_FINISH = -1
"""`kill_at` of a case killed just after its `finish` message: the kill lands during commit."""
OWNERS_DIR = Path(f"{RESERVED_PREFIX}owners")


@dataclass
class Case:
    """One crash point: an upload of `files` (path -> (old content or None, new content))."""

    number: int
    kind: str
    files: dict[str, tuple[bytes | None, bytes]]
    kill_at: int  # data bytes sent before the kill, or AT_FINISH
    upload_id: str = ""
    sent: int = 0
    acknowledged: set[str] = field(default_factory=set)
    """Paths the server answered OK for before the kill: they must hold the new content."""
    call_code: str = ""
    settled: dict[str, str | None] = field(default_factory=dict)
    """What each path held when checked after its restart: later restarts must keep it."""


def plan(rng: random.Random, count: int) -> list[Case]:
    """`count` cases, the four kinds in turn, their sizes, contents and kill points from `rng`."""
    cases = []
    for number in range(count):
        kind = KINDS[number % len(KINDS)]
        base = f"c{number:03d}-{kind}"

        def content(low: int, high: int) -> bytes:
            return rng.randbytes(rng.randint(low, high))

        files: dict[str, tuple[bytes | None, bytes]] = {}
        if kind == "directory":
            # Mostly a few files; sometimes more than a commit group (batches.GROUP_FILES, 32),
            # so a kill can come after the stream's first group was published.
            many = rng.random() < 0.3
            for index in range(rng.randint(34, 45) if many else rng.randint(3, 6)):
                small = many or rng.random() < 0.6  # packed into LogArtifactsRequest.files
                new = (
                    content(1, 8 * KiB if many else 48 * KiB)
                    if small
                    else content(100 * KiB, 700 * KiB)
                )
                old = content(1, 300 * KiB) if rng.random() < 0.5 else None
                files[f"{base}/d/f{index}.bin"] = (old, new)
        else:
            old = content(1, 900 * KiB) if kind == "overwrite" or rng.random() < 0.3 else None
            if kind == "new":
                old = None
            files[f"{base}/file.bin"] = (old, content(1, 1200 * KiB))
        total = sum(len(new) for _old, new in files.values())
        kill_at = AT_FINISH if rng.random() < 0.25 else rng.randint(0, total)
        cases.append(Case(number, kind, files, kill_at))
    return cases


def batches(rng: random.Random, cases: list[Case]) -> Iterator[list[Case]]:
    """Runs of 1 to 4 cases that share one SIGKILL."""
    position = 0
    while position < len(cases):
        size = rng.randint(1, 4)
        yield cases[position : position + size]
        position += size


class Killer:
    """Kills the server once every stream of a batch has reached its crash point (or ended)."""

    def __init__(self, server: ServerProcess, cases: list[Case], delay: float) -> None:
        self.server = server
        self.ready = {case.number: threading.Event() for case in cases}
        self.at_finish = {case.number for case in cases if case.kill_at == AT_FINISH}
        self.killed = threading.Event()
        self.delay = delay

    def at_point(self, case: Case) -> None:
        """Called by a case's generator at its point: blocks until the server is dead."""
        self.ready[case.number].set()
        self.killed.wait(60)

    def before_finish(self, case: Case) -> None:
        """Called by a case killed during commit just before its `finish`: once the other
        streams of the batch are at their points, so the kill follows the finish closely."""
        for number, event in self.ready.items():
            if number not in self.at_finish:
                event.wait(60)

    def finished(self, case: Case) -> None:
        """After `finish` the stream must end: the server commits only once it has seen the
        end of the stream, so this case does not wait for the kill like the others."""
        self.ready[case.number].set()

    def kill_when_ready(self) -> None:
        deadline = time.monotonic() + 60
        for event in self.ready.values():
            assert event.wait(max(0.0, deadline - time.monotonic())), "a stream never got there"
        time.sleep(self.delay)
        self.server.process.kill()
        self.server.process.wait(30)
        self.server.killed = True
        self.killed.set()


def chunks(data: bytes, case: Case, killer: Killer) -> Iterator[bytes]:
    """`data` in CHUNK pieces, cut so the stream stops at exactly `case.kill_at` bytes."""
    for position in range(0, len(data), CHUNK):
        piece = data[position : position + CHUNK]
        if case.kill_at != AT_FINISH and case.sent + len(piece) >= case.kill_at:
            head = piece[: case.kill_at - case.sent]
            if head:
                case.sent += len(head)
                yield head
            killer.at_point(case)
            raise StopIteration_()
        case.sent += len(piece)
        yield piece


class StopIteration_(Exception):  # noqa: N801 - a generator cannot raise StopIteration
    """Ends a case's request stream at its crash point (after the server is dead)."""


def single_stream(case: Case, killer: Killer) -> Iterator[pb.LogArtifactRequest]:
    ((path, (_old, new)),) = case.files.items()
    if case.upload_id:
        header = pb.UploadHeader(upload_id=case.upload_id, offset=0)
    else:
        header = pb.UploadHeader(path=path, size=len(new))
    yield pb.LogArtifactRequest(header=header)
    try:
        for piece in chunks(new, case, killer):
            yield pb.LogArtifactRequest(data=piece)
    except StopIteration_:
        return
    killer.before_finish(case)
    yield pb.LogArtifactRequest(finish=pb.UploadFinish(sha256=hashlib.sha256(new).hexdigest()))
    killer.finished(case)


def directory_stream(case: Case, killer: Killer) -> Iterator[pb.LogArtifactsRequest]:
    """The client's shape: files up to 48 KiB packed several to a message, larger ones in
    chunks; a packed message is all or nothing, so a point inside one cuts before it."""
    pack: list[pb.PackedUpload] = []
    last = list(case.files)[-1]

    def flush() -> Iterator[pb.LogArtifactsRequest]:
        size = sum(len(p.data) for p in pack)
        if case.kill_at != AT_FINISH and case.sent + size > case.kill_at:
            killer.at_point(case)
            raise StopIteration_()
        case.sent += size
        yield pb.LogArtifactsRequest(files=list(pack))
        pack.clear()

    try:
        for path, (_old, new) in case.files.items():
            header = pb.UploadHeader(path=path, size=len(new))
            finish = pb.UploadFinish(sha256=hashlib.sha256(new).hexdigest())
            if len(new) <= 48 * KiB:
                pack.append(pb.PackedUpload(header=header, data=new, finish=finish))
                if sum(len(p.data) for p in pack) >= CHUNK:  # the client's message size
                    yield from flush()
                continue
            if pack:
                yield from flush()
            yield pb.LogArtifactsRequest(header=header)
            for piece in chunks(new, case, killer):
                yield pb.LogArtifactsRequest(data=piece)
            if case.kill_at == AT_FINISH and path == last and not pack:
                killer.before_finish(case)
            yield pb.LogArtifactsRequest(finish=finish)
        if case.kill_at == AT_FINISH and pack:
            killer.before_finish(case)
        if pack:
            yield from flush()
        if case.kill_at != AT_FINISH:  # a point at the very end: everything sent, no more
            killer.at_point(case)
            return
    except StopIteration_:
        return
    killer.finished(case)


def run_case(stub: pb_grpc.ArtifactServiceStub, case: Case, killer: Killer) -> None:
    """Sends the case's stream until the kill; records what the server acknowledged."""
    try:
        if case.kind == "directory":
            reply = stub.LogArtifacts(directory_stream(case, killer), timeout=60)
            case.acknowledged = {r.path for r in reply.results if r.code == 0}
            failed = [(r.path, r.code, r.message) for r in reply.results if r.code != 0]
            if failed:
                case.call_code = f"files failed: {failed}"
                return
        else:
            stub.LogArtifact(single_stream(case, killer), timeout=60)
            case.acknowledged = set(case.files)
        case.call_code = "OK"
    except grpc.RpcError as exc:
        case.call_code = exc.code().name
    except Exception as exc:  # reported by the test: a thread cannot fail it
        case.call_code = f"error: {exc!r}"
    finally:
        killer.ready[case.number].set()  # a call that ended early is at its point too


def prepare(stub: pb_grpc.ArtifactServiceStub, case: Case) -> None:
    """Publishes the old versions and, for a resumable case, opens its upload session."""
    for path, (old, new) in case.files.items():
        if old is not None:
            header = pb.UploadHeader(path=path, size=len(old))
            messages = [pb.LogArtifactRequest(header=header, data=old, finish=pb.UploadFinish())]
            stub.LogArtifact(iter(messages), timeout=30)
        if case.kind == "resumable":
            reply = stub.StartResumableUpload(
                pb.StartResumableUploadRequest(
                    path=path, size=len(new), sha256=hashlib.sha256(new).hexdigest()
                ),
                timeout=30,
            )
            assert reply.supported, "resumable uploads are supported on local disk"
            case.upload_id = reply.upload_id


def download(stub: pb_grpc.ArtifactServiceStub, path: str) -> bytes | None:
    try:
        stream = stub.DownloadArtifact(pb.DownloadArtifactRequest(path=path), timeout=30)
        return b"".join(message.data for message in stream)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def outcome_of(
    stub: pb_grpc.ArtifactServiceStub, root: Path, case: Case, path: str
) -> tuple[str, str]:
    """("old" | "new" | "absent", a description) of `path`, checked on disk and through the
    server; fails on anything else."""
    old, new = case.files[path]
    on_disk = root / path
    disk = sha256_of(on_disk) if on_disk.exists() else None
    served = download(stub, path)
    served_digest = None if served is None else hashlib.sha256(served).hexdigest()
    where = f"case {case.number} ({case.kind}, kill at {case.kill_at}, sent {case.sent}) {path}"
    assert disk == served_digest, f"{where}: disk {disk} but the server serves {served_digest}"
    candidates = {hashlib.sha256(new).hexdigest(): "new"}
    if old is not None:
        candidates[hashlib.sha256(old).hexdigest()] = "old"
    if disk is None:
        assert old is None, f"{where}: the old version is gone and the new one is not there"
        state = "absent"
    else:
        assert disk in candidates, f"{where}: neither the old nor the new content (a mix)"
        state = candidates[disk]
        info = stub.GetArtifact(pb.GetArtifactRequest(path=path), timeout=30).file
        assert info.sha256 in (disk, ""), f"{where}: the recorded digest is {info.sha256}"
    if path in case.acknowledged:
        assert state == "new", f"{where}: acknowledged, but the path holds {state}"
    return state, where


def finish_resumable(
    stub: pb_grpc.ArtifactServiceStub, case: Case, path: str, state: str, where: str
) -> str:
    """A resumable upload killed before publishing is still resumable from a prefix of what was
    sent, and its completion publishes the new content; one published is closed."""
    _old, new = case.files[path]
    try:
        held = stub.QueryWriteStatus(
            pb.QueryWriteStatusRequest(upload_id=case.upload_id), timeout=30
        ).committed_size
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, f"{where}: {exc}"
        assert state.startswith("new"), f"{where}: session gone, path holds {state}: bytes lost"
        return "published"
    assert not state.startswith("new") or held == len(new), (
        f"{where}: published but {held} bytes still held"
    )
    assert held <= case.sent or held == len(new), f"{where}: holds {held} of {case.sent} sent"
    header = pb.UploadHeader(upload_id=case.upload_id, offset=held)
    rest = [pb.LogArtifactRequest(header=header)]
    rest += [pb.LogArtifactRequest(data=new[p : p + CHUNK]) for p in range(held, len(new), CHUNK)]
    rest.append(pb.LogArtifactRequest(finish=pb.UploadFinish()))
    reply = stub.LogArtifact(iter(rest), timeout=60)
    assert reply.file.sha256 == hashlib.sha256(new).hexdigest(), where
    return "resumed"


def wait_recovered(root: Path, server: ServerProcess) -> None:
    """Start-up recovery has removed every temporary file and owner mark of dead processes."""
    deadline = time.monotonic() + 15
    while True:
        leftovers = temp_upload_files(root, in_progress_only=True)
        marks = sorted(p.name for p in (root / OWNERS_DIR).glob("*.lock"))
        if not leftovers and len(marks) <= 1:
            return
        assert time.monotonic() < deadline, (
            f"after restart: temporary files {leftovers[:5]}, owner marks {marks}\n"
            f"{server.log_text()[-3000:]}"
        )
        time.sleep(0.05)


def crash(server: ServerProcess, batch: list[Case], delay: float) -> None:
    """Prepares the batch's cases, runs their streams and kills the server at their points."""
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ArtifactServiceStub(channel)
        for case in batch:
            prepare(stub, case)
        killer = Killer(server, batch, delay)
        threads = [threading.Thread(target=run_case, args=(stub, case, killer)) for case in batch]
        for thread in threads:
            thread.start()
        killer.kill_when_ready()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), "a call did not end after the kill"
    for case in batch:
        assert case.call_code in ("OK", "UNAVAILABLE", "CANCELLED"), (
            f"case {case.number} ({case.kind}): {case.call_code}"
        )


def check(
    stub: pb_grpc.ArtifactServiceStub, root: Path, batch: list[Case], outcomes: Counter[str]
) -> None:
    """Every path of the batch after the restart (see `outcome_of`); resumable uploads that
    were not published are finished. Counts outcomes as `kind: state`."""
    for case in batch:
        for path in case.files:
            state, where = outcome_of(stub, root, case, path)
            if state == "new" and path not in case.acknowledged:
                state = "new, unacknowledged"  # committed; the reply was cut off
            outcomes[f"{case.kind}: {state}"] += 1
            if case.kind == "resumable":
                outcomes[f"resumable: {finish_resumable(stub, case, path, state, where)}"] += 1
                assert outcome_of(stub, root, case, path)[0] == "new", where
            on_disk = root / path
            case.settled[path] = sha256_of(on_disk) if on_disk.exists() else None
        # The listing shows exactly the paths that hold a file: nothing temporary, no debris.
        base = next(iter(case.files)).split("/", 1)[0]
        try:
            listing = stub.ListArtifacts(
                pb.ListArtifactsRequest(path=base, recursive=True), timeout=30
            ).files
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            listing = []
        listed = {info.path for info in listing if not info.is_dir}
        assert listed == {p for p, digest in case.settled.items() if digest}, case.number


def test_every_path_is_old_or_new_whole_after_a_sigkill_at_random_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    with capsys.disabled():
        print(f"\ncrash points: seed {SEED} (ARTIFACTD_CRASH_SEED), {CASES} cases")
    cases = plan(rng, CASES)
    root, workdir = tmp_path / "store", tmp_path / "run"
    started = time.monotonic()
    server = start_server(root, workdir)
    outcomes: Counter[str] = Counter()
    kills = left_by_kills = 0
    try:
        for batch in batches(rng, cases):
            # A kill after a finish waits up to 150 ms, so it lands before, during or after
            # the commit; the others' streams are paused, a short delay is enough.
            at_finish = any(case.kill_at == AT_FINISH for case in batch)
            crash(server, batch, delay=rng.uniform(0, 0.15 if at_finish else 0.03))
            kills += 1
            left_by_kills += len(temp_upload_files(root, in_progress_only=True))
            server = start_server(root, workdir)
            wait_recovered(root, server)
            with grpc.insecure_channel(server.target) as channel:
                check(pb_grpc.ArtifactServiceStub(channel), root, batch, outcomes)
        # Later kills and recoveries changed nothing settled earlier; nothing temporary is left.
        for case in cases:
            for path, digest in case.settled.items():
                on_disk = root / path
                assert (sha256_of(on_disk) if on_disk.exists() else None) == digest, path
        assert temp_upload_files(root) == [], "temporary files left after every upload ended"
    finally:
        if server.process.poll() is None:
            assert server.stop() == 0, server.log_text()[-3000:]
    elapsed = time.monotonic() - started
    at_finish = sum(1 for case in cases if case.kill_at == AT_FINISH)
    codes = Counter(case.call_code for case in cases)
    with capsys.disabled():
        print(
            f"crash points: seed {SEED}: {len(cases)} cases ({at_finish} at finish) in {kills} "
            f"SIGKILLs, {elapsed:.1f} s; paths {dict(sorted(outcomes.items()))}; calls "
            f"{dict(codes)}; {left_by_kills} temporary files left by the kills, all removed by "
            "start-up recovery"
        )
    assert len(cases) >= 50 and kills >= 10
