"""Issue 23, item 6: every RPC fuzzed from the protobuf descriptors against a real server, and
junk, HTTP/1 and idle connections on its port.

Requests are wire bytes built from each method's input descriptor (tests/proto_strategies.py):
invalid UTF-8, undefined enum numbers, huge and negative numbers, oversized repeated fields,
unknown fields and wrong wire types, truncated or flipped bytes; request streams in any order,
and correct uploads then broken (data before the header, finish twice, a second header, sizes
and offsets off by one or by 2**62). A new RPC in the protos is fuzzed without a change here,
and the set fuzzed is checked against what the server announces through reflection.

After every call: its status is neither INTERNAL nor UNKNOWN (a client's bytes are never a
server bug), the process lives, its log has no traceback, health says SERVING, and nothing
beside the server's roots changed (a sentinel folder beside the root, and the folder holding
both, are compared before and after). Hypothesis runs a bounded, seeded number of examples per
RPC, so a run takes about two minutes on two cores and CI sees the same requests every time:
`ARTIFACTD_FUZZ_EXAMPLES` and `ARTIFACTD_FUZZ_SEED` change them; the figures are printed at
the end of the module.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hypothesis import HealthCheck, given, seed, settings

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc
from artifactd_server.api.request_decoding import undefined_enum

from databases import fresh_database
from proto_strategies import (
    Hints,
    MessageStrategies,
    Rpc,
    is_upload,
    request_streams,
    requests,
    rpcs,
    upload_streams,
)  # fmt: skip
from run_fixtures import new_experiment, new_run, put
from servers import ServerProcess, start_server

RPCS = rpcs(pb.DESCRIPTOR, rpb.DESCRIPTOR)
UPLOADS = [rpc for rpc in RPCS if rpc.client_streaming and is_upload(rpc.input_type)]
EXAMPLES = int(os.environ.get("ARTIFACTD_FUZZ_EXAMPLES", "75"))
"""Examples per RPC; request streams get twice as many, broken uploads three times."""
SEED = int(os.environ.get("ARTIFACTD_FUZZ_SEED", "23"))
STORE = os.environ.get("ARTIFACTD_FUZZ_STORE", "postgresql")
"""The backend store behind the server: sqlite, postgresql or mariadb (tests/databases.py).
PostgreSQL by default, the strictest about what text and numbers it stores (a NUL in a name
crashed there only; tests/test_fuzz_findings.py keeps each finding fixed on all three)."""
CALL_TIMEOUT = 30.0
"""A complete request the server has not answered in this time is a hang: a defect too."""
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
SERVER_FILES = ("artifactd.db", "server-", "port-")
"""What the server and its harness write in its working folder (the SQLite store, the log)."""


# -- the server under fuzz and what is checked after every call -------------------------------


Snapshot = dict[str, tuple[bool, int, int]]


def snapshot(base: Path, skip: set[Path]) -> Snapshot:
    """Every entry under `base` but the server's roots and own files: (is dir, size, mtime)."""
    found: Snapshot = {}
    for directory, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if Path(directory, d) not in skip]
        for name in [*dirs, *files]:
            if Path(directory) in skip or name.startswith(SERVER_FILES):
                continue
            path = Path(directory, name)
            info = path.lstat()
            found[str(path)] = (path.is_dir(), info.st_size, info.st_mtime_ns)
    return found


@dataclass
class Tally:
    """What the fuzzing did, per RPC: examples run and the status codes they got."""

    examples: Counter[str] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0

    def record(self, label: str, code: grpc.StatusCode) -> None:
        """Counts one example under `label`: the RPC's name, then `/` and a kind, if any."""
        self.last = time.monotonic()
        self.first = self.first or self.last
        self.examples[label] += 1
        self.codes.setdefault(label, Counter())[code.name] += 1

    def rpcs(self) -> set[str]:
        return {label.split("/")[0] for label in self.examples}


@dataclass
class Target:
    """The fuzzed server, the hints for its fields, and the checks made after each call."""

    server: ServerProcess
    base: Path
    roots: set[Path]
    hints: Hints
    channel: grpc.Channel
    health: health_pb2_grpc.HealthStub
    before: Snapshot
    tally: Tally = field(default_factory=Tally)
    log_offset: int = 0

    def call(self, rpc: Rpc, messages: list[bytes]) -> grpc.StatusCode:
        """Sends the bytes as they are (no serializer) and reads every answer."""
        kind = {
            (False, False): self.channel.unary_unary,
            (False, True): self.channel.unary_stream,
            (True, False): self.channel.stream_unary,
            (True, True): self.channel.stream_stream,
        }[rpc.client_streaming, rpc.server_streaming]
        method: Any = kind(rpc.path)
        body: Any = iter(messages) if rpc.client_streaming else messages[0]
        try:
            reply = method(body, timeout=CALL_TIMEOUT)
            if rpc.server_streaming:
                for _ in reply:
                    pass
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def check(self, rpc: Rpc, messages: list[bytes], kind: str = "", note: str = "") -> None:
        """One fuzzed call and every check after it."""
        code = self.call(rpc, messages)
        self.tally.record(f"{rpc.name}/{kind}" if kind else rpc.name, code)
        sent = f"{rpc.name} {note} {[m[:200] for m in messages[:6]]!r}"[:2000]
        assert code not in NEVER, f"{code.name} for {sent}\n{self.new_log()[-4000:]}"
        assert self.server.process.poll() is None, f"server died after {sent}:\n{self.new_log()}"
        log = self.new_log()
        assert "Traceback" not in log and "crashed (ref" not in log, f"after {sent}:\n{log}"
        status = self.health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING, f"not SERVING after {sent}"
        after = snapshot(self.base, self.roots)
        assert after == self.before, f"outside the roots changed after {sent}: " + str(
            {k: after.get(k) for k in set(after) ^ set(self.before) | _changed(after, self.before)}
        )

    def new_log(self) -> str:
        with open(self.server.log, "rb") as fh:
            fh.seek(self.log_offset)
            text = fh.read()
        self.log_offset += len(text)
        return text.decode(errors="replace")


def _changed(a: Snapshot, b: Snapshot) -> set[str]:
    return {key for key in a.keys() & b.keys() if a[key] != b[key]}


def _hints(base: Path, extra: Path, channel: grpc.Channel) -> Hints:
    """Real ids and paths made on the server, and paths aimed at the sentinel outside it."""
    runs, artifacts = rpb_grpc.RunServiceStub(channel), pb_grpc.ArtifactServiceStub(channel)
    experiment = new_experiment(runs)
    new_experiment(runs)  # a second page of experiments
    run, other, deleted = (new_run(runs, experiment.experiment_id) for _ in range(3))
    put(artifacts, "keep.txt", b"kept", run_id=run.run_id)
    put(artifacts, "keep.txt", b"gone", run_id=deleted.run_id)
    runs.DeleteRun(rpb.DeleteRunRequest(run_id=deleted.run_id), timeout=10)
    for path in ("fuzz/a.txt", "fuzz/dir/b.bin", "fuzz/dir/c.bin"):
        put(artifacts, path, path.encode())
    resumable = artifacts.StartResumableUpload(
        pb.StartResumableUploadRequest(path="fuzz/resumable.bin", size=600), timeout=10
    ).upload_id
    listing = pb.ListArtifactsRequest(path="fuzz", recursive=True, page_size=1)
    tokens = [
        artifacts.ListArtifacts(listing, timeout=10).next_page_token,
        runs.ListRuns(rpb.ListRunsRequest(page_size=1), timeout=10).next_page_token,
        runs.ListExperiments(rpb.ListExperimentsRequest(page_size=1), timeout=10).next_page_token,
    ]
    sentinel = base / "sentinel"
    run_root = f"{experiment.experiment_id}/{run.run_id}/artifacts"
    paths = [
        "fuzz/a.txt", "fuzz/dir", "fuzz", "fuzz/new.bin", "fuzz/dir/b.bin", f"{run_root}/keep.txt",
        "fuzz/resumable.bin", "keep.txt", "", ".", "..", "../sentinel/x", "fuzz/../../sentinel",
        str(sentinel / "x"), f"file://{sentinel}/x", "fuzz//x", "fuzz/./x", "fuzz/x/", "\\..\\x",
        "fuzz/%2e%2e/x", "fuzz/\x00x", "CON", "fuzz/" + "d/" * 200 + "x", "x" * 300,
        "fuzz/.artifactd-upload-1-2", "fuzz/a.txt/under",
    ]  # fmt: skip
    ids = [run.run_id, other.run_id, deleted.run_id, "", "0" * 32, "../x", uuid.uuid4().hex]
    experiments = [experiment.experiment_id, "0", "01", "-1", "99999999999999999999", "abc"]
    return Hints({
        "path": paths,
        "run_id": ids, "run_ids": ids,
        "experiment_id": experiments, "experiment_ids": experiments,
        "upload_id": [resumable, "", "../../sentinel", uuid.uuid4().hex, resumable + "x"],
        "sha256": ["0" * 64, "F" * 64, "abc", "z" * 64],
        "name": [experiment.name, "Default", "fuzz-new", "x" * 600, "a\x00b", " \t"],
        "run_name": ["r", "x" * 600, "\x00", "🙂"],
        "artifact_location": [
            str(sentinel), f"file://{sentinel}", f"{base}/store/../sentinel", "s3://bucket/x",
            "runs:/x", "file:/x", "mlflow-artifacts:/x", f"file://{extra}/fuzz", str(extra),
            f"file://{base}/store/{experiment.experiment_id}", "relative/x", "file://",
        ],
        "page_token": [t for t in tokens if t] + ["!!!", "AAAA", "e30="],
    })  # fmt: skip


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Target]:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "sentinel" / "inner").mkdir(parents=True)
    (base / "sentinel" / "keep.txt").write_text("must stay as it is")
    (base / "extra").mkdir()
    with contextlib.ExitStack() as stack:
        store: list[str] = []
        if STORE != "sqlite":  # SQLite: the server's default, a file in its working folder
            uri = stack.enter_context(fresh_database(STORE, base / "db"))
            store = ["--backend-store-uri", uri]
        server = start_server(
            base / "store", base / "run", "--extra-artifact-root", str(base / "extra"), *store
        )
        yield from _fuzzed(server, base, request)


def _fuzzed(server: ServerProcess, base: Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    leaked = 0
    try:
        with grpc.insecure_channel(server.target) as channel:
            hints = _hints(base, base / "extra", channel)
            fds = open_fds(server.process.pid)
            roots = {base / "store", base / "extra"}
            found = Target(
                server, base, roots, hints, channel, health_pb2_grpc.HealthStub(channel),
                snapshot(base, roots),
            )  # fmt: skip
            found.new_log()
            yield found
            leaked = _settled(server.process.pid, fds + 2) - fds
    finally:
        code = server.stop()
    _report(request, found.tally, found.tally.last - found.tally.first, leaked)
    assert code == 0, f"server exited with {code}:\n{server.log_text()[-4000:]}"
    assert leaked <= 2, f"{leaked} more descriptors open after the fuzzing than before"


def _report(request: pytest.FixtureRequest, tally: Tally, seconds: float, leaked: int) -> None:
    total = sum(tally.examples.values())
    _say(
        request,
        f"fuzz: {len(tally.rpcs())} RPCs, {total} examples in {seconds:.0f} s on {STORE}, "
        f"seed {SEED}, "
        f"{EXAMPLES} per RPC (x2 for request streams, x3 for broken uploads), "
        f"descriptors held after: {leaked:+d}",
        *(f"  {name}: {n} {dict(tally.codes[name])}" for name, n in sorted(tally.examples.items())),
    )


def _say(request: pytest.FixtureRequest, *lines: str) -> None:
    """Prints the figures past pytest's output capture, so a passing run shows them too."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        for line in lines:
            print(line, flush=True)


def _settings(rpc: Rpc, examples: int, salt: str) -> Callable[[Any], Any]:
    """Bounded and reproducible: a fixed seed per RPC, no example database, no deadline."""

    def apply(test: Any) -> Any:
        test = settings(
            max_examples=examples, deadline=None, database=None, print_blob=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.large_base_example],
        )(test)  # fmt: skip
        return seed(SEED + zlib.crc32(f"{rpc.path} {salt}".encode()))(test)

    return apply


# -- the fuzzing ------------------------------------------------------------------------------


def test_the_snapshot_sees_any_change_beside_the_roots(tmp_path: Path) -> None:
    """The check after every call can fail: what changes in a root is ignored, anything
    beside it (a new file or folder, a file rewritten) is seen."""
    root, sentinel = tmp_path / "store", tmp_path / "sentinel"
    root.mkdir()
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("kept")
    before = snapshot(tmp_path, {root})
    (root / "inside.txt").write_text("fine")
    assert snapshot(tmp_path, {root}) == before
    (sentinel / "keep.txt").write_text("KEPT")
    changed = snapshot(tmp_path, {root})
    assert changed != before
    (tmp_path / "escaped").mkdir()
    assert set(snapshot(tmp_path, {root})) - set(changed) == {str(tmp_path / "escaped")}


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.name for rpc in RPCS])
def test_valid_requests_decode_as_their_type(rpc: Rpc) -> None:
    """The strategies' valid half is valid: protobuf parses it as the method's request type
    with every enum defined, so those calls get past decoding into the handlers."""
    parse = message_factory.GetMessageClass(rpc.input_type).FromString
    valid = MessageStrategies(Hints({"path": ["fuzz/a"]}), hostile=False).message(rpc.input_type)

    @_settings(rpc, 20, "valid")
    @given(valid)
    def decodes(body: bytes) -> None:
        assert undefined_enum(parse(body)) is None

    decodes()


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.name for rpc in RPCS])
def test_fuzzed_requests_never_hurt_the_server(target: Target, rpc: Rpc) -> None:
    if rpc.client_streaming:
        stream = request_streams(target.hints, rpc.input_type)
        examples = 2 * EXAMPLES
    else:
        stream = requests(target.hints, rpc.input_type).map(lambda body: [body])
        examples = EXAMPLES

    @_settings(rpc, examples, "requests")
    @given(stream)
    def fuzz(messages: list[bytes]) -> None:
        target.check(rpc, messages)

    fuzz()


@pytest.mark.parametrize("rpc", UPLOADS, ids=[rpc.name for rpc in UPLOADS])
def test_broken_upload_streams_never_hurt_the_server(target: Target, rpc: Rpc) -> None:
    @_settings(rpc, 3 * EXAMPLES, "uploads")
    @given(upload_streams(rpc.input_type, target.hints))
    def fuzz(stream: tuple[list[bytes], str]) -> None:
        target.check(rpc, stream[0], "broken uploads", stream[1])

    fuzz()
    codes = target.tally.codes[f"{rpc.name}/broken uploads"]
    assert codes["OK"] and codes["INVALID_ARGUMENT"], f"the streams reach too little: {codes}"


def test_every_rpc_the_server_serves_is_fuzzed(
    target: Target, request: pytest.FixtureRequest
) -> None:
    """The fuzzed set is the descriptors' set, and covers every method the server announces
    through reflection (bar health and reflection themselves): a new service or RPC that the
    descriptors above do not hold fails here."""
    database = ProtoReflectionDescriptorDatabase(target.channel)
    pool = descriptor_pool.DescriptorPool(database)
    served = {
        f"/{name}/{method.name}"
        for name in database.get_services()
        if not name.startswith(("grpc.health.", "grpc.reflection."))
        for method in pool.FindServiceByName(name).methods
    }
    fuzzed = {rpc.path for rpc in RPCS}
    assert served == fuzzed
    assert len(fuzzed) == len(RPCS) >= 28
    selected = {
        str(item.callspec.id)
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_fuzzed_requests_never_hurt_the_server"
    }
    if selected == {rpc.name for rpc in RPCS}:  # the whole module ran: every RPC was fuzzed
        assert target.tally.rpcs() == selected


# -- junk, HTTP/1 and idle connections on the gRPC port ---------------------------------------


def vm_rss(pid: int) -> int:
    """Resident memory of `pid` in bytes, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BODY = b"x" * 100_000


def _opening_bytes(rng: random.Random) -> dict[str, bytes]:
    """What a confused or hostile peer sends first, by name."""
    return {
        "junk-16": rng.randbytes(16),
        "junk-64k": rng.randbytes(65_536),
        "junk-1m": rng.randbytes(1 << 20),
        "http1-get": b"GET / HTTP/1.1\r\nHost: artifactd\r\nConnection: keep-alive\r\n\r\n",
        "http1-post": b"POST /artifactd.v1.ArtifactService/GetCapabilities HTTP/1.1\r\n"
        b"Host: artifactd\r\nContent-Type: application/grpc\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY,
        "http1-upgrade": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "half-preface": PREFACE[:12],
        "preface-then-junk": PREFACE + rng.randbytes(4096),
        "bad-frame": PREFACE + b"\xff\xff\xff\x04\x00\x00\x00\x00\x00",  # a 16 MiB SETTINGS
        "tls-hello": bytes.fromhex("16030100a5010000a10303") + rng.randbytes(160),
        "slow-headers": b"GET / HTTP/1.1\r\nHost:",
    }


@pytest.fixture
def connection_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path / "store", tmp_path / "run")  # the default limits
    yield server
    assert server.stop() == 0, server.log_text()[-4000:]


def _settled(pid: int, bound: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := open_fds(pid)) > bound and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def _serving(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=20, wait_for_ready=True
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        capabilities = pb_grpc.ArtifactServiceStub(channel).GetCapabilities(
            pb.GetCapabilitiesRequest(), timeout=20
        )
        assert capabilities.chunk_size > 0
        put(pb_grpc.ArtifactServiceStub(channel), f"alive/{uuid.uuid4().hex}", b"still works")


def _answers(sockets: dict[str, socket.socket], wait: float) -> dict[str, tuple[bytes, float]]:
    """What the server sent on each socket, and after how many seconds it closed it (inf if it
    did not within `wait`)."""
    answers = {name: (b"", float("inf")) for name in sockets}
    waiting = {sock: name for name, sock in sockets.items()}
    start = time.monotonic()
    while waiting and (left := start + wait - time.monotonic()) > 0:
        readable, _, _ = select.select(list(waiting), [], [], left)
        for sock in readable:
            name = waiting[sock]
            try:
                chunk = sock.recv(65_536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            answers[name] = (answers[name][0] + chunk, answers[name][1])
            if not chunk:
                answers[name] = (answers[name][0], time.monotonic() - start)
                del waiting[sock]
    return answers


def frame_types(answer: bytes) -> set[int]:
    """The HTTP/2 frame types in what the server sent (9-byte frame headers, then payloads)."""
    found, at = set(), 0
    while at + 9 <= len(answer):
        found.add(answer[at + 3])
        at += 9 + int.from_bytes(answer[at : at + 3], "big")
    return found


CONTROL_FRAMES = {0x4, 0x6, 0x7, 0x8}
"""SETTINGS, PING, GOAWAY, WINDOW_UPDATE: a server that only says these answered no request."""
HANDSHAKE_TIMEOUT = 10.0
"""The server's default --handshake-timeout, which these tests run with."""
RSS_BOUND = 32 << 20
"""Growth of the server's resident memory allowed for these connections (measured: under
2 MiB for 55 junk connections, about 3 MiB for 200 idle ones)."""


def test_junk_and_http1_on_the_grpc_port_are_refused_and_cost_nothing(
    connection_server: ServerProcess, request: pytest.FixtureRequest
) -> None:
    """Junk (up to a MiB), HTTP/1.1 GET, POST with a body and h2c upgrade, a TLS hello, bad
    HTTP/2 frames: the server answers none of them (control frames only), closes each at
    once, and a half preface when the handshake timeout runs out; memory and descriptors
    stay bounded and return, and it serves throughout."""
    server, pid = connection_server, connection_server.process.pid
    _serving(server)
    fds, rss = open_fds(pid), vm_rss(pid)
    opening = _opening_bytes(random.Random(SEED))
    sockets: dict[str, socket.socket] = {}
    try:
        for round_ in range(5):  # each kind five times over, all open at once
            for name, data in opening.items():
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sockets[f"{name}#{round_}"] = sock
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    sock.sendall(data)
        _serving(server)
        grown = vm_rss(pid) - rss
        answers = _answers(sockets, HANDSHAKE_TIMEOUT + 5)
    finally:
        for sock in sockets.values():
            sock.close()
    for name, (answer, closed_after) in answers.items():
        assert frame_types(answer) <= CONTROL_FRAMES, (name, answer[:200])
        limit = HANDSHAKE_TIMEOUT + 5 if name.startswith("half-preface") else 5.0
        assert closed_after < limit, f"{name}: not closed by the server in {limit} s"
    assert _settled(pid, fds + 2) <= fds + 2, "descriptors held after the connections closed"
    _serving(server)
    assert grown < RSS_BOUND, f"RSS grew by {grown >> 20} MiB"
    assert "Traceback" not in server.log_text()
    _say(request, f"junk: {len(sockets)} connections, RSS +{grown / 2**20:.1f} MiB, fds back")


def test_two_hundred_idle_connections_leave_it_serving_and_bounded(
    connection_server: ServerProcess, request: pytest.FixtureRequest
) -> None:
    """150 connections that never finish the HTTP/2 handshake (nothing, half a preface, the
    preface alone) and 50 that finish it and then say nothing, all at once, on the default
    limits: the server serves, holds one descriptor each and a bounded amount of memory,
    closes the first kind itself within the handshake timeout, and gets back to its
    descriptors when the rest close. (test_hardening's idle test is the capped and timed-out
    case with small limits.)"""
    server, pid = connection_server, connection_server.process.pid
    _serving(server)
    fds, rss = open_fds(pid), vm_rss(pid)
    settings_frame, ack = bytes.fromhex("000000040000000000"), bytes.fromhex("000000040100000000")
    unfinished = (b"", PREFACE[:12], PREFACE)
    sockets: dict[str, socket.socket] = {}
    try:
        for i in range(200):
            opening = unfinished[i % 3] if i < 150 else PREFACE + settings_frame + ack
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(opening)
            sockets[f"{'unfinished' if i < 150 else 'idle'}-{i}"] = sock
        time.sleep(0.5)
        held = open_fds(pid) - fds
        assert held <= 200 + 5, f"{held} descriptors for 200 connections"
        _serving(server)
        grown = vm_rss(pid) - rss
        unfinished_ones = {n: s for n, s in sockets.items() if n.startswith("unfinished")}
        answers = _answers(unfinished_ones, HANDSHAKE_TIMEOUT + 5)
        late = [n for n, (_, after) in answers.items() if after > HANDSHAKE_TIMEOUT + 5]
        assert not late, f"{len(late)} unfinished handshakes still open: {late[:5]}"
        assert _settled(pid, fds + 50 + 2) <= fds + 50 + 2
        _serving(server)
    finally:
        for sock in sockets.values():
            sock.close()
    assert _settled(pid, fds + 2) <= fds + 2, "descriptors held after the connections closed"
    _serving(server)
    assert grown < RSS_BOUND, f"RSS grew by {grown >> 20} MiB for 200 idle connections"
    assert "Traceback" not in server.log_text()
    _say(request, f"idle: 200 connections, {held} descriptors held, RSS +{grown / 2**20:.1f} MiB")
