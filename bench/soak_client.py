"""One soak client: mixed operations on its own prefix, each checked against a model of what
should exist there.

Why a model: a soak that only counts errors misses the failures that matter most to a storage
service, a file that silently went missing or came back with other bytes. Each client writes
under a prefix no other client touches, so it knows exactly what the server must hold there:
every download is compared with the sha256 of what was uploaded, every listing with the set of
paths, every delete with whether the path existed. A write that failed (a timeout, UNAVAILABLE)
may or may not have landed; the model then accepts either outcome for that path until the next
read of it settles which one happened.

Used by bench/soak.py; needs artifactd's client (run with the project's venv).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc

from artifactd.client import ArtifactClient
from artifactd.client.direct import DirectSettings
from artifactd.protocol.errors import ArtifactError
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

KiB = 1024
MiB = 1024 * KiB
ABSENT = ""
"""The model's digest for "no file at this path"."""
FATAL_CODES = ("INTERNAL", "UNKNOWN", "DATA_LOSS")
"""Status codes that fail a soak: a server bug, or bytes that are not what was stored."""
MAX_FILES = 60
"""Files a client keeps before it prefers deleting: the store stays bounded over hours."""


class Violation(Exception):
    """What the server holds contradicts the model: a lost or corrupt artifact."""


@dataclass
class Model:
    """path -> digests it may hold (`ABSENT` among them when it may be missing)."""

    files: dict[str, set[str]] = field(default_factory=dict)

    def certain(self) -> list[str]:
        return sorted(p for p, digests in self.files.items() if ABSENT not in digests)

    def stored(self, path: str, digest: str) -> None:
        self.files[path] = {digest}

    def maybe_stored(self, path: str, digest: str) -> None:
        self.files.setdefault(path, {ABSENT}).add(digest)

    def deleted(self, prefix: str) -> None:
        for path in self.under(prefix):
            del self.files[path]

    def maybe_deleted(self, prefix: str) -> None:
        for path in self.under(prefix):
            self.files[path].add(ABSENT)

    def under(self, prefix: str) -> list[str]:
        return [p for p in self.files if p == prefix or p.startswith(prefix + "/")]

    def observe(self, path: str, digest: str) -> None:
        """Settles `path` on what the server showed, or raises if that was not possible."""
        expected = self.files.get(path, {ABSENT})
        if digest not in expected:
            what = "missing" if digest == ABSENT else f"sha256 {digest[:16]}…"
            raise Violation(f"{path}: server has {what}, expected one of {sorted(expected)}")
        if digest == ABSENT:
            self.files.pop(path, None)
        else:
            self.files[path] = {digest}

    def observe_listing(self, prefix: str, listed: dict[str, str]) -> None:
        """`listed` (path -> sha256 or "" when the server does not know it) is all of `prefix`."""
        for path in self.under(prefix):
            if path not in listed:
                self.observe(path, ABSENT)
        for path, digest in listed.items():
            if path not in self.files:
                raise Violation(f"{path}: listed, but this client never stored it")
            if digest:
                self.observe(path, digest)


@dataclass
class Tally:
    """What one client did: operations and latencies by kind, errors by (kind, code)."""

    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    violations: list[str] = field(default_factory=list)


def code_of(exc: BaseException) -> str:
    if isinstance(exc, ArtifactError):
        return exc.code.name
    if isinstance(exc, grpc.RpcError):
        return exc.code().name
    return f"client:{type(exc).__name__}"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class SoakClient:
    """Runs mixed operations against `target` under `prefix` until told to stop."""

    def __init__(
        self,
        target: str,
        prefix: str,
        scratch: Path,
        seed: int,
        *,
        multipart: bool,
    ) -> None:
        self.prefix = prefix
        self.scratch = scratch
        self.rng = random.Random(seed)
        self.model = Model()
        self.tally = Tally()
        self.dirs: list[str] = []
        streamed = DirectSettings(
            enabled=False, resumable_minimum_size=1 << 62, download_enabled=False,
            state_dir=str(scratch / "state"),
        )  # fmt: skip
        self.client = ArtifactClient(target, direct=streamed)
        self.direct = (
            ArtifactClient(
                target,
                direct=DirectSettings(
                    enabled=True,
                    minimum_size=1,
                    part_size=5 * MiB,
                    workers=2,
                    state_dir=str(scratch / "state"),
                    download_enabled=False,
                ),
            )
            if multipart
            else None
        )
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.ArtifactServiceStub(self.channel)
        self.operations: dict[str, tuple[int, Callable[[], None]]] = {
            "log": (25, self.log),
            "log_dir": (8, self.log_dir),
            "download": (20, self.download),
            "download_dir": (5, self.download_dir),
            "list": (10, self.list),
            "stat": (8, self.stat),
            "delete": (10, self.delete),
            "resumable": (4, self.resumable),
        }
        if self.direct is not None:
            self.operations["multipart"] = (4, self.multipart)

    def close(self) -> None:
        self.client.close()
        if self.direct is not None:
            self.direct.close()
        self.channel.close()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, until: float) -> None:
        names = list(self.operations)
        weights = [self.operations[name][0] for name in names]
        while time.monotonic() < until:
            kind = self.rng.choices(names, weights)[0]
            if kind.startswith("log") and len(self.model.files) > MAX_FILES:
                kind = "delete"
            self.timed(kind, self.operations[kind][1])

    def timed(self, kind: str, operation: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            operation()
        except Violation as exc:
            self.tally.violations.append(f"{kind}: {exc}")
        except Exception as exc:  # counted by code; fatal codes fail the soak
            self.tally.errors[(kind, code_of(exc))] += 1
        else:
            self.tally.ops[kind] += 1
            self.tally.latencies[kind].append(time.monotonic() - started)
        finally:
            for leftover in self.scratch.glob("w-*"):  # local files of this operation
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    def verify_all(self) -> None:
        """The end of the soak: the listing and every file's bytes match the model."""
        self.timed("final_list", self.list)
        for path in self.model.certain():
            self.timed("final_download", partial(self.download, path))

    # -- helpers ----------------------------------------------------------------------------

    def content(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def new_path(self) -> str:
        """A new file name, or (a third of the time) an existing one: an overwrite."""
        existing = [p for p in self.model.files if "/d" not in p[len(self.prefix) :]]
        if existing and self.rng.random() < 0.33:
            return self.rng.choice(sorted(existing))
        return f"{self.prefix}/f{self.rng.getrandbits(40):010x}.bin"

    def work(self, name: str) -> Path:
        return self.scratch / f"w-{name}"

    def pick(self) -> str | None:
        paths = sorted(self.model.files)
        return self.rng.choice(paths) if paths else None

    def writing(self, paths: dict[str, str], write: Callable[[], object]) -> None:
        """Runs a write of `paths` (path -> new digest), keeping the model right either way."""
        try:
            write()
        except BaseException:
            for path, digest in paths.items():
                self.model.maybe_stored(path, digest)
            raise
        for path, digest in paths.items():
            self.model.stored(path, digest)

    # -- operations -------------------------------------------------------------------------

    def log(self) -> None:
        path = self.new_path()
        data = self.content(1, 256 * KiB)
        local = self.work("file")
        local.write_bytes(data)
        parent, name = path.rsplit("/", 1)
        digest = hashlib.sha256(data).hexdigest()
        self.writing(
            {path: digest}, lambda: self.client.log_artifact(local, parent, file_name=name)
        )

    def log_dir(self) -> None:
        """A directory of small files: the client packs them several to a message."""
        directory = f"{self.prefix}/d{self.rng.getrandbits(32):08x}"
        local = self.work("dir")
        expected = {}
        for index in range(self.rng.randint(2, 12)):
            data = self.content(0, 64 * KiB)
            relative = f"sub{index % 3}/x{index}.bin" if index % 2 else f"x{index}.bin"
            (local / relative).parent.mkdir(parents=True, exist_ok=True)
            (local / relative).write_bytes(data)
            expected[f"{directory}/{relative}"] = hashlib.sha256(data).hexdigest()
        self.dirs.append(directory)
        self.writing(expected, lambda: self.client.log_artifacts(local, directory))

    def download(self, path: str | None = None) -> None:
        path = path or self.pick()
        if path is None:
            return
        local = self.work("down")
        try:
            self.client.download_file(path, local)
        except ArtifactError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            self.model.observe(path, ABSENT)
            return
        self.model.observe(path, sha256_file(local))

    def download_dir(self) -> None:
        live = [d for d in self.dirs if self.model.under(d)]
        if not live:
            return
        directory = self.rng.choice(live)
        local = self.work("tree")
        try:
            landed = Path(self.client.download_artifacts(directory, local))
        except ArtifactError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            self.model.observe_listing(directory, {})
            return
        got = {
            f"{directory}/{p.relative_to(landed).as_posix()}": sha256_file(p)
            for p in landed.rglob("*")
            if p.is_file()
        }
        self.model.observe_listing(directory, got)

    def list(self) -> None:
        try:
            infos = self.client.list_artifacts(self.prefix, recursive=True)
        except ArtifactError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            infos = []
        self.model.observe_listing(
            self.prefix, {i.path: i.sha256 or "" for i in infos if not i.is_dir}
        )

    def stat(self) -> None:
        path = self.pick()
        if path is None:
            return
        try:
            info = self.client.get_artifact_info(path)
        except ArtifactError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            self.model.observe(path, ABSENT)
            return
        if info.sha256:
            self.model.observe(path, info.sha256)

    def delete(self) -> None:
        live = [d for d in self.dirs if self.model.under(d)]
        if live and self.rng.random() < 0.3:
            target = self.rng.choice(live)
            self.dirs.remove(target)
        else:
            picked = self.pick()
            if picked is None:
                return
            target = picked
        certain = all(ABSENT not in self.model.files[p] for p in self.model.under(target))
        try:
            existed = self.client.delete_artifacts(target)
        except BaseException:
            self.model.maybe_deleted(target)
            raise
        if certain and not existed:
            raise Violation(f"{target}: deleted, but the server says nothing was there")
        self.model.deleted(target)

    def resumable(self) -> None:
        """StartResumableUpload, a stream broken halfway (ABORTED, the bytes kept), the rest
        from what QueryWriteStatus says was kept."""
        path = f"{self.prefix}/r{self.rng.getrandbits(32):08x}.bin"
        data = self.content(256 * KiB, 3 * MiB)
        digest = hashlib.sha256(data).hexdigest()
        start = pb.StartResumableUploadRequest(path=path, size=len(data), sha256=digest)
        reply = self.stub.StartResumableUpload(start, timeout=30)
        if not reply.supported:
            self.writing({path: digest}, lambda: self.log_whole(path, data))
            return
        upload_id = reply.upload_id

        def stream(offset: int, end: int, finish: bool) -> Iterator[pb.LogArtifactRequest]:
            yield pb.LogArtifactRequest(header=pb.UploadHeader(upload_id=upload_id, offset=offset))
            for position in range(offset, end, 256 * KiB):
                yield pb.LogArtifactRequest(data=data[position : min(end, position + 256 * KiB)])
            if finish:
                yield pb.LogArtifactRequest(finish=pb.UploadFinish())

        half = self.rng.randint(1, len(data) - 1)
        try:
            self.stub.LogArtifact(stream(0, half, finish=False), timeout=60)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED:  # a stream without finish: ABORTED
                raise
        query = pb.QueryWriteStatusRequest(upload_id=upload_id)
        held = self.stub.QueryWriteStatus(query, timeout=30).committed_size
        if held != half:
            raise Violation(f"{path}: {half} bytes sent before the break, {held} kept")

        def finish() -> None:
            done = self.stub.LogArtifact(stream(held, len(data), finish=True), timeout=60)
            if done.file.sha256 != digest:
                raise Violation(f"{path}: resumed upload stored {done.file.sha256}")

        self.writing({path: digest}, finish)

    def log_whole(self, path: str, data: bytes) -> None:
        message = pb.LogArtifactRequest(
            header=pb.UploadHeader(path=path, size=len(data)), data=data, finish=pb.UploadFinish()
        )
        self.stub.LogArtifact(iter([message]), timeout=60)

    def multipart(self) -> None:
        """A presigned multipart upload (storage that supports it): parts straight to storage."""
        assert self.direct is not None
        path = f"{self.prefix}/m{self.rng.getrandbits(32):08x}.bin"
        data = self.content(5 * MiB + 1, 11 * MiB)
        local = self.work("multipart")
        local.write_bytes(data)
        parent, name = path.rsplit("/", 1)
        direct = self.direct
        self.writing(
            {path: hashlib.sha256(data).hexdigest()},
            lambda: direct.log_artifact(local, parent, file_name=name),
        )


def scratch_for(base: Path, index: int) -> Path:
    scratch = base / f"client-{index:03d}"
    if scratch.exists():
        shutil.rmtree(scratch)
    os.makedirs(scratch)
    return scratch
