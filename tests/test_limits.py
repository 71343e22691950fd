"""The limits that protect the server, each set low on a real server process and hit.

One server runs with authentication and every request limit lowered (message size, path
length, files per LogArtifacts stream, streams per connection, calls per principal); another
with a one-second idle-connection timeout. Each test pushes one limit just past its value and
checks the answer (code and message), that the call just under it works, and that nothing is
held afterwards: a cancelled call gives its principal's slot back, a closed idle connection its
descriptor. GetCapabilities must advertise what the server enforces.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.client.settings import ClientSettings
from artifactd.protocol.grants import new_token, token_digest
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from test_auth import answer
from test_hardening import open_fds
from waiting import wait_for

from servers import ServerProcess, start_server

MiB = 1024 * 1024
MAX_MESSAGE = 2 * MiB
MAX_PATH = 64
MAX_BATCH = 3
MAX_STREAMS = 2
MAX_CALLS = 2
PACKED_MAX_FILES = 1000  # artifactd_server.domain.limits.PACKED_MAX_FILES

Metadata = list[tuple[str, str]]


class Limited:
    """The limited server, a token per principal, and a stub on its own channel per use."""

    def __init__(self, server: ServerProcess, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens
        self._channels: list[grpc.Channel] = []

    def md(self, principal: str) -> Metadata:
        return [("authorization", f"Bearer {self.tokens[principal]}")]

    def stub(self) -> pb_grpc.ArtifactServiceStub:
        """A stub on a new channel (a new connection: streams per connection are counted)."""
        # its own subchannel pool: channels to one target otherwise share a connection
        channel = grpc.insecure_channel(
            self.server.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._channels.append(channel)
        return pb_grpc.ArtifactServiceStub(channel)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    base = tmp_path_factory.mktemp("limits")
    tokens = {name: new_token() for name in ("alice", "bob", "carol")}
    roles = {"alice": "admin", "bob": "admin", "carol": "reader:1"}
    (base / "tokens.toml").write_text(
        "\n".join(
            f'[[token]]\nprincipal = "{name}"\nsha256 = "{token_digest(token)}"\n'
            f'roles = ["{roles[name]}"]\n'
            for name, token in tokens.items()
        )
    )
    server = start_server(
        base / "store", base / "run",
        "--auth-tokens-file", str(base / "tokens.toml"),
        "--max-message-size", str(MAX_MESSAGE),
        "--max-path-length", str(MAX_PATH),
        "--max-batch-files", str(MAX_BATCH),
        "--max-concurrent-streams", str(MAX_STREAMS),
        "--max-calls-per-principal", str(MAX_CALLS),
        client=ClientSettings(token=tokens["alice"]),
    )  # fmt: skip
    limited = Limited(server, tokens)
    try:
        yield limited
    finally:
        limited.close()
        assert server.stop() == 0, server.log_text()


def upload(path: str, *chunks: bytes) -> Iterator[pb.LogArtifactRequest]:
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path))
    for chunk in chunks:
        yield pb.LogArtifactRequest(data=chunk)
    yield pb.LogArtifactRequest(finish=pb.UploadFinish())


def held_upload(path: str, release: threading.Event) -> Iterator[pb.LogArtifactRequest]:
    """An upload that sends its header, then nothing until `release`: a call in progress."""
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path))
    release.wait(60)
    yield pb.LogArtifactRequest(data=b"held")
    yield pb.LogArtifactRequest(finish=pb.UploadFinish())


def test_capabilities_advertise_the_limits_enforced(limited: Limited) -> None:
    caps = limited.stub().GetCapabilities(pb.GetCapabilitiesRequest(), metadata=limited.md("bob"))
    assert (caps.max_message_size, caps.max_path_length, caps.max_batch_files) == (
        MAX_MESSAGE,
        MAX_PATH,
        MAX_BATCH,
    )


def test_a_message_over_the_max_message_size_is_resource_exhausted(limited: Limited) -> None:
    stub, md = limited.stub(), limited.md("bob")
    code, message = answer(
        lambda: stub.LogArtifact(upload("big/over.bin", os.urandom(MAX_MESSAGE + 1)), metadata=md)
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, message)
    assert str(MAX_MESSAGE) in message, message
    under = os.urandom(MAX_MESSAGE - 64 * 1024)  # the message's own fields fit in the rest
    reply = stub.LogArtifact(upload("big/under.bin", under), metadata=md, timeout=30)
    assert reply.file.file_size == len(under)
    code, _ = answer(
        lambda: stub.GetArtifact(pb.GetArtifactRequest(path="big/over.bin"), metadata=md)
    )
    assert code == grpc.StatusCode.NOT_FOUND, "the refused upload left a file"


def test_a_path_over_the_max_path_length_is_invalid_argument_for_every_caller(
    limited: Limited,
) -> None:
    stub = limited.stub()
    long_path = "p/" + "x" * (MAX_PATH - 1)  # MAX_PATH + 1 bytes
    for principal in ("bob", "carol"):  # global admin; a reader of experiment 1 only
        for call in (
            lambda: stub.ListArtifacts(
                pb.ListArtifactsRequest(path=long_path),
                metadata=limited.md(principal),  # noqa: B023
            ),
            lambda: stub.DeleteArtifacts(
                pb.DeleteArtifactsRequest(path=long_path),
                metadata=limited.md(principal),  # noqa: B023
            ),
            lambda: list(
                stub.DownloadArtifact(
                    pb.DownloadArtifactRequest(path=long_path),
                    metadata=limited.md(principal),  # noqa: B023
                )
            ),
        ):
            code, message = answer(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (principal, code, message)
            assert f"at most {MAX_PATH} (--max-path-length)" in message, message
    at_limit = "p/" + "x" * (MAX_PATH - 2)
    reply = stub.LogArtifact(upload(at_limit, b"fits"), metadata=limited.md("bob"))
    assert reply.file.path == at_limit
    # in a batch the long path fails its own file only
    batch = iter(
        [
            pb.LogArtifactsRequest(header=pb.UploadHeader(path="p/ok.txt"), data=b"ok"),
            pb.LogArtifactsRequest(finish=pb.UploadFinish()),
            pb.LogArtifactsRequest(header=pb.UploadHeader(path=long_path), data=b"no"),
            pb.LogArtifactsRequest(finish=pb.UploadFinish()),
        ]
    )
    results = stub.LogArtifacts(batch, metadata=limited.md("bob")).results
    assert [r.code for r in results] == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert "--max-path-length" in results[1].message


def test_a_stream_carries_at_most_max_batch_files(limited: Limited) -> None:
    stub = limited.stub()

    def batch() -> Iterator[pb.LogArtifactsRequest]:
        for number in range(MAX_BATCH + 2):
            yield pb.LogArtifactsRequest(
                header=pb.UploadHeader(path=f"batch/{number}.txt"), data=b"%d" % number
            )
            yield pb.LogArtifactsRequest(finish=pb.UploadFinish())

    results = stub.LogArtifacts(batch(), metadata=limited.md("bob")).results
    codes = [r.code for r in results]
    assert codes == [0] * MAX_BATCH + [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2, results
    assert f"at most {MAX_BATCH} files" in results[-1].message
    listed = stub.ListArtifacts(pb.ListArtifactsRequest(path="batch"), metadata=limited.md("bob"))
    assert len(listed.files) == MAX_BATCH


def test_the_client_sends_a_directory_in_streams_the_server_takes(
    limited: Limited, tmp_path: Path
) -> None:
    """The Python client reads `max_batch_files` from GetCapabilities and splits a directory
    into streams of at most that many files, so a lowered `--max-batch-files` costs streams,
    not refused files."""
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    names = [f"{n}.txt" for n in range(MAX_BATCH * 2)] + [f"sub/{n}.txt" for n in range(2)]
    for name in names:
        (local / name).write_bytes(name.encode())
    settings = ClientSettings(token=limited.tokens["bob"], max_retries=0)
    with ArtifactClient(limited.server.target, settings=settings) as client:
        stored = client.log_artifacts(local, "split")
        assert sorted(str(info.path) for info in stored) == sorted(f"split/{n}" for n in names)
        for name in names:
            with client.open_range(f"split/{name}") as reader:
                assert reader.read(100) == name.encode()


def test_a_packed_download_message_holds_at_most_a_bounded_number_of_files(
    limited: Limited,
) -> None:
    """Empty files never fill a packed message's bytes: its file count is bounded too."""
    folder = limited.server.root / "packed"
    folder.mkdir()
    count = 2 * PACKED_MAX_FILES + 500
    for number in range(count):
        (folder / f"{number:05d}.txt").touch()
    replies = list(
        limited.stub().DownloadArtifacts(
            pb.DownloadArtifactsRequest(path="packed", accept_packed_files=True),
            metadata=limited.md("bob"),
            timeout=60,
        )
    )
    per_message = [len(r.files) for r in replies if r.files]
    assert sum(per_message) == count
    assert max(per_message) <= PACKED_MAX_FILES, per_message


def test_one_connection_runs_at_most_max_concurrent_streams(limited: Limited) -> None:
    stub = limited.stub()
    stub.GetCapabilities(pb.GetCapabilitiesRequest(), metadata=limited.md("bob"), timeout=5)
    release = threading.Event()  # connected: the client knows the server's SETTINGS now
    held = [
        stub.LogArtifact.future(
            held_upload(f"streams/{n}.bin", release), metadata=limited.md("alice"), timeout=60
        )
        for n in range(MAX_STREAMS)
    ]
    try:
        # a third call on the same connection waits for a stream (bob is under his own limit)
        def waits() -> bool:
            code, _ = answer(
                lambda: stub.GetCapabilities(
                    pb.GetCapabilitiesRequest(), metadata=limited.md("bob"), timeout=1.5
                )
            )
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), code
            return code == grpc.StatusCode.DEADLINE_EXCEEDED  # OK: the held ones not open yet

        assert wait_for(waits, 15), "a third stream ran on the connection"
        # ...while another connection is served at once
        other = limited.stub()
        other.GetCapabilities(pb.GetCapabilitiesRequest(), metadata=limited.md("bob"), timeout=5)
    finally:
        release.set()
    assert [f.result(timeout=30).file.file_size for f in held] == [4] * MAX_STREAMS
    stub.GetCapabilities(pb.GetCapabilitiesRequest(), metadata=limited.md("bob"), timeout=5)


def _exhausted(limited: Limited, principal: str) -> Callable[[], bool]:
    def check() -> bool:
        code, message = answer(
            lambda: limited.stub().GetCapabilities(
                pb.GetCapabilitiesRequest(), metadata=limited.md(principal), timeout=5
            )
        )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert f"--max-calls-per-principal {MAX_CALLS}" in message, message
            assert f"{principal} already has {MAX_CALLS} calls in progress" in message, message
            return True
        assert code == grpc.StatusCode.OK, (code, message)
        return False

    return check


def _served(limited: Limited, principal: str) -> Callable[[], bool]:
    return lambda: not _exhausted(limited, principal)()


def test_a_principal_has_at_most_max_calls_per_principal_in_progress(limited: Limited) -> None:
    """Over the limit is RESOURCE_EXHAUSTED naming it; other principals are served; a slot comes
    back when a call ends, by finishing or by the client cancelling it (upload or download)."""
    release = threading.Event()
    uploads = [
        limited.stub().LogArtifact.future(
            held_upload(f"calls/{n}.bin", release), metadata=limited.md("alice"), timeout=60
        )
        for n in range(MAX_CALLS)
    ]
    try:
        assert wait_for(_exhausted(limited, "alice")), "alice's third call was served"
        limited.stub().GetCapabilities(
            pb.GetCapabilitiesRequest(), metadata=limited.md("bob"), timeout=5
        )
        uploads[0].cancel()  # a cancelled call gives its slot back...
        assert wait_for(_served(limited, "alice")), "the cancelled upload kept its slot"
    finally:
        release.set()
    assert uploads[1].result(timeout=30).file.file_size == 4  # ...and so does a finished one
    assert wait_for(_served(limited, "alice"))
    # server-streaming downloads, cancelled after their first message
    stub = limited.stub()
    stub.LogArtifact(upload("calls/big.bin", *[os.urandom(MiB)] * 24), metadata=limited.md("bob"))
    downloads = []
    for _ in range(MAX_CALLS):
        reading = limited.stub().DownloadArtifact(
            pb.DownloadArtifactRequest(path="calls/big.bin"), metadata=limited.md("alice")
        )
        next(reading)
        downloads.append(reading)
    assert wait_for(_exhausted(limited, "alice"))
    for reading in downloads:
        reading.cancel()
    assert wait_for(_served(limited, "alice")), "cancelled downloads kept their slots"
    # and again the full allowance, at once
    both = [
        limited.stub().GetArtifact.future(
            pb.GetArtifactRequest(path="calls/big.bin"), metadata=limited.md("alice")
        )
        for _ in range(MAX_CALLS)
    ]
    assert [f.result(timeout=10).file.file_size for f in both] == [24 * MiB] * MAX_CALLS


def test_an_idle_connection_is_closed_after_max_connection_idle(tmp_path: Path) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run", "--max-connection-idle", "1")
    states: list[grpc.ChannelConnectivity] = []
    try:
        baseline = open_fds(server.process.pid)
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.ArtifactServiceStub(channel)
        stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
        connected = open_fds(server.process.pid)
        assert connected > baseline - 1
        started = time.monotonic()
        channel.subscribe(states.append, try_to_connect=False)
        assert wait_for(lambda: grpc.ChannelConnectivity.IDLE in states, 10), states
        closed_after = time.monotonic() - started
        assert closed_after < 5, closed_after
        assert wait_for(lambda: open_fds(server.process.pid) <= baseline, 10), (
            "the idle connection's descriptor is still open"
        )
        # the client reconnects on its next call
        stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
        channel.close()
    finally:
        assert server.stop() == 0
