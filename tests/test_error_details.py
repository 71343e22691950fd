"""Failed calls carry `google.rpc` error details: ErrorInfo always, BadRequest for a refused
field, RetryInfo when a retry may work; the Python client exposes them on its exceptions.

Server side: raw stubs on a real channel to a real server process, the details read back with
`grpc_status.rpc_status.from_call` (which also checks they agree with the plain status). The
faults are real: a path attack, a missing file, an S3 endpoint on a closed 127.0.0.1 port,
a call without a token and one with too small a role.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from artifactd.client import ArtifactClient, ClientSettings
from artifactd.client.rpc import call
from artifactd.protocol import errors
from artifactd.protocol.grants import new_token, token_digest
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from servers import ServerProcess, start_server

TIMEOUT = 30.0
ATTACK = "../etc/passwd"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failure(attempt: Callable[[], Any]) -> tuple[grpc.Call, status_pb2.Status]:
    """The failed call an attempt ends with, and the `google.rpc.Status` in its trailers."""
    with pytest.raises(grpc.RpcError) as info:
        attempt()
    assert isinstance(info.value, grpc.Call)
    status = rpc_status.from_call(info.value)
    assert status is not None, f"no error details on {info.value}"
    return info.value, status


def unpack(status: status_pb2.Status) -> dict[str, Any]:
    """The details of a status by type name; each type at most once."""
    found: dict[str, Any] = {}
    for detail in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            message = cls()
            if detail.Unpack(message):
                assert cls.__name__ not in found, f"two {cls.__name__} details"
                found[cls.__name__] = message
    assert len(found) == len(status.details), f"unknown details in {status}"
    return found


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    info = unpack(status).get("ErrorInfo")
    assert info is not None, f"no ErrorInfo in {status}"
    assert info.domain == "artifactd"
    return info  # type: ignore[no-any-return]


def upload(path: str) -> Iterator[pb.LogArtifactRequest]:
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path, size=1))
    yield pb.LogArtifactRequest(data=b"x")
    yield pb.LogArtifactRequest(finish=pb.UploadFinish())


# -- invalid input: INVALID_ARGUMENT with a BadRequest naming the field ------------------------

ATTACKS: dict[str, Callable[[pb_grpc.ArtifactServiceStub], Any]] = {
    "GetArtifact": lambda s: s.GetArtifact(pb.GetArtifactRequest(path=ATTACK), timeout=TIMEOUT),
    "ListArtifacts": lambda s: s.ListArtifacts(
        pb.ListArtifactsRequest(path=ATTACK), timeout=TIMEOUT
    ),
    "DeleteArtifacts": lambda s: s.DeleteArtifacts(
        pb.DeleteArtifactsRequest(path=ATTACK), timeout=TIMEOUT
    ),
    "DownloadArtifact": lambda s: list(
        s.DownloadArtifact(pb.DownloadArtifactRequest(path=ATTACK), timeout=TIMEOUT)
    ),
    "LogArtifact": lambda s: s.LogArtifact(upload(ATTACK), timeout=TIMEOUT),
}


@pytest.mark.parametrize("method", list(ATTACKS))
def test_a_path_attack_names_the_path_field(stub: pb_grpc.ArtifactServiceStub, method: str) -> None:
    error, status = failure(lambda: ATTACKS[method](stub))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "'..'" in status.message and ATTACK in status.message
    details = unpack(status)
    info = error_info(status)
    assert info.reason == "INVALID_PATH"
    assert info.metadata["method"] == method
    if method != "LogArtifact":  # a stream's path is in its first message, not the request
        assert info.metadata["path"] == ATTACK
    assert "RetryInfo" not in details, "retrying a bad path cannot help"
    violations = details["BadRequest"].field_violations
    assert [v.field for v in violations] == ["path"]
    assert "'..'" in violations[0].description


def test_a_bad_run_id_names_the_run_id_field(stub: pb_grpc.ArtifactServiceStub) -> None:
    _, status = failure(
        lambda: stub.GetArtifact(pb.GetArtifactRequest(path="a", run_id="nope"), timeout=TIMEOUT)
    )
    assert error_info(status).reason == "INVALID_ARGUMENT"
    assert [v.field for v in unpack(status)["BadRequest"].field_violations] == ["run_id"]


# -- a missing artifact: NOT_FOUND with ErrorInfo, no BadRequest, no RetryInfo ----------------


def test_a_missing_artifact_is_not_found_with_error_info(
    stub: pb_grpc.ArtifactServiceStub, prefix: str
) -> None:
    path = f"{prefix}/missing.bin"
    error, status = failure(
        lambda: stub.GetArtifact(pb.GetArtifactRequest(path=path), timeout=TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert status.message == error.details()
    info = error_info(status)
    assert info.reason == "NOT_FOUND"
    assert dict(info.metadata) == {"method": "GetArtifact", "path": path}
    assert set(unpack(status)) == {"ErrorInfo"}


def test_the_request_id_trailer_survives_the_details(stub: pb_grpc.ArtifactServiceStub) -> None:
    error, _ = failure(
        lambda: stub.GetArtifact(
            pb.GetArtifactRequest(path="no/such"),
            timeout=TIMEOUT,
            metadata=(("x-request-id", "details-and-id"),),
        )
    )
    trailers = dict(error.trailing_metadata())
    assert trailers.get("x-request-id") == "details-and-id"
    assert "grpc-status-details-bin" in trailers


# -- an unreachable storage: UNAVAILABLE with RetryInfo -----------------------------------------


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose S3 endpoint is a closed port on 127.0.0.1: every storage call fails."""
    base = tmp_path_factory.mktemp("unreachable")
    env = {
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": "2",
    }  # fmt: skip
    server = start_server(base / "store", base / "run", destination="s3://bucket/p", env=env)
    yield server
    assert server.stop() == 0, server.log_text()


def test_an_unreachable_storage_is_unavailable_with_retry_info(
    unreachable: ServerProcess,
) -> None:
    with grpc.insecure_channel(unreachable.target) as channel:
        stub = pb_grpc.ArtifactServiceStub(channel)
        error, status = failure(
            lambda: stub.GetArtifact(pb.GetArtifactRequest(path="a/b.bin"), timeout=TIMEOUT)
        )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not be reached" in status.message
    details = unpack(status)
    assert error_info(status).reason == "UNAVAILABLE"
    delay = details["RetryInfo"].retry_delay
    assert 0 < delay.seconds + delay.nanos / 1e9 <= 60
    assert "BadRequest" not in details


def test_the_client_waits_as_long_as_retry_info_asks(unreachable: ServerProcess) -> None:
    settings = ClientSettings(max_retries=2)
    with ArtifactClient(unreachable.target, settings=settings) as client:
        started = time.monotonic()
        with pytest.raises(errors.Unavailable) as info:
            client.get_artifact_info("a/b.bin")
        elapsed = time.monotonic() - started
    assert info.value.reason == "UNAVAILABLE"
    assert info.value.retry_delay is not None and info.value.retry_delay >= 0.5
    assert info.value.error_metadata["method"] == "GetArtifact"
    # two waits of the server's delay (jitter 0.8 to 1.2); the client's own backoff would be
    # 0.25 s then 0.5 s, well under this
    assert elapsed >= 2 * 0.8 * info.value.retry_delay, elapsed


# -- authentication and authorization, from the interceptor -----------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server that wants tokens, and a token of a reader on the whole server."""
    base = tmp_path_factory.mktemp("guarded")
    token = new_token()
    tokens_file = base / "tokens.toml"
    tokens_file.write_text(
        f'[[token]]\nprincipal = "reader"\nsha256 = "{token_digest(token)}"\nroles = ["reader"]\n'
    )
    server = start_server(
        base / "store", base / "run", "--auth-tokens-file", str(tokens_file),
        client=ClientSettings(token=token),
    )  # fmt: skip
    yield server, token
    assert server.stop() == 0, server.log_text()


def test_refusals_by_the_auth_interceptor_carry_error_info(
    guarded: tuple[ServerProcess, str],
) -> None:
    server, token = guarded
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ArtifactServiceStub(channel)
        error, status = failure(
            lambda: stub.GetArtifact(pb.GetArtifactRequest(path="x"), timeout=TIMEOUT)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        info = error_info(status)
        assert info.reason == "UNAUTHENTICATED"
        assert info.metadata["method"] == "GetArtifact"

        error, status = failure(
            lambda: stub.DeleteArtifacts(
                pb.DeleteArtifactsRequest(path="x/y"),
                timeout=TIMEOUT,
                metadata=(("authorization", f"Bearer {token}"),),
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info(status)
        assert info.reason == "PERMISSION_DENIED"
        assert dict(info.metadata) == {"method": "DeleteArtifacts", "path": "x/y"}


# -- the Python client ---------------------------------------------------------------------------


def test_the_client_exposes_reason_and_field_violations(
    server: ServerProcess, stub: pb_grpc.ArtifactServiceStub
) -> None:
    # the client's own checks would refuse the attack before sending it; its error mapping
    # (`call`, which every client method goes through) is what is under test here
    with pytest.raises(errors.InvalidArgument) as info:
        call(stub.GetArtifact, pb.GetArtifactRequest(path=ATTACK), TIMEOUT)
    exc = info.value
    assert exc.reason == "INVALID_PATH"
    assert [field for field, _ in exc.field_violations] == ["path"]
    assert "'..'" in exc.field_violations[0][1]
    assert exc.retry_delay is None
    assert exc.error_metadata == {"method": "GetArtifact", "path": ATTACK}


def test_the_client_exposes_the_reason_of_not_found(client: ArtifactClient, prefix: str) -> None:
    with pytest.raises(errors.NotFound) as info:
        client.get_artifact_info(f"{prefix}/nothing-here")
    assert info.value.reason == "NOT_FOUND"
    assert info.value.field_violations == []
    assert info.value.error_metadata["path"] == f"{prefix}/nothing-here"


def test_the_client_works_without_details() -> None:
    """No server at all: gRPC's own UNAVAILABLE, with no details, maps as before."""
    settings = ClientSettings(max_retries=0)
    with (
        ArtifactClient(f"127.0.0.1:{closed_port()}", settings=settings) as client,
        pytest.raises(errors.Unavailable) as info,
    ):
        client.get_artifact_info("a")
    assert info.value.message.startswith("artifactd server unavailable")
    assert info.value.reason is None
    assert info.value.field_violations == []
    assert info.value.retry_delay is None
