"""What every artifactd client shares: the channel, its options, deadlines, retries, errors.

`ArtifactClient` and `TrackingClient` are both a `Connection`: one channel to one server or to
several replicas (`ARTIFACTD_SERVER` when no target is given), the environment's settings, calls
that are safe to repeat retried with backoff while the server is UNAVAILABLE, and every gRPC
failure turned into the `artifactd.protocol.errors` exception named after its status code.

Balancing over replicas is gRPC's own (`service_config`): `round_robin` over the addresses the
target resolves to, a health watch per replica when the user named several, and gRPC's retry
policy for the calls that are safe to send twice. Two layers of retries then apply to those
calls, both bounded: gRPC's (`RETRY_POLICY`, quick, moves a call to another replica) inside
each of the client's own (`ARTIFACTD_MAX_RETRIES`, with longer backoff, for an outage of every
replica).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar, cast

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from artifactd.client.settings import ClientSettings, channel_credentials
from artifactd.client.target import (
    DEFAULT_TARGET,
    ServerTarget,
    guard_environment,
    server_target,
    strict_from_env,
)
from artifactd.protocol.environment import SERVER
from artifactd.protocol.errors import ArtifactError, from_status, retry_delay

T = TypeVar("T")

MAX_MESSAGE_SIZE = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
]
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
_BROKEN_STREAM_CODES = (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
_BROKEN_STREAM = "Stream removed"
MAX_SUGGESTED_DELAY = 30.0
"""The longest wait between retries a server's `RetryInfo` can ask for."""

HEALTH_SERVICE = "artifactd.v1.ArtifactService"
"""The service whose grpc.health.v1 status says a replica takes new calls (NOT_SERVING from the
moment it starts draining; the same name as the Kubernetes readiness probe's)."""

RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
"""gRPC's retries, for `TRANSPARENT_RETRIES` only: up to 3 more attempts within about 2 s, each
picked anew by `round_robin`, so a call that met a replica dying goes to another one."""

TRANSPARENT_RETRIES = {
    "artifactd.v1.ArtifactService": (
        "GetArtifact", "ListArtifacts", "GetCapabilities", "DownloadArtifact",
        "DownloadArtifacts", "GetMultipartUploadUrls", "ListMultipartUploadParts",
        "QueryWriteStatus", "GetDownloadUrl",
    ),
    "artifactd.v1.RunService": ("GetExperiment", "ListExperiments", "GetRun", "ListRuns"),
}  # fmt: skip
"""Methods gRPC may send again by itself on UNAVAILABLE: they read, or sign a URL, and change
nothing, so a second copy has the effect of one. gRPC replays a call only until its first
response arrives (a download broken later is resumed by the client from the last byte it got).
Not here: uploads (their stream is larger than gRPC's 256 KiB replay buffer; the client sends a
local file again itself, see `ArtifactClient.log_artifact`), and every call that creates,
completes, aborts or deletes (a repeat would make a second session or run, or answer for the
first attempt's effect: `existed`, NOT_FOUND), nor grpc.health.v1 Check: a probe reports what
it finds, and retried, a server refusing connections read as DEADLINE_EXCEEDED instead of
UNAVAILABLE within `artifactd health --timeout`. Calls that never reached a server (a refused
stream, a connection that was going away) gRPC retries transparently whatever the method."""


def service_config(balanced: bool) -> str:
    """The channel's `grpc.service_config`: `round_robin` over every address of the target,
    retries of the read-only methods and, with several replicas, a health watch of each (a
    draining replica reports NOT_SERVING and gets no new calls while it finishes its own)."""
    config: dict[str, object] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method}
                    for service, methods in TRANSPARENT_RETRIES.items()
                    for method in methods
                ],
                "retryPolicy": RETRY_POLICY,
            }
        ],
    }
    if balanced:
        config["healthCheckConfig"] = {"serviceName": HEALTH_SERVICE}
    return json.dumps(config)


def open_channel(target: str | ServerTarget, settings: ClientSettings) -> grpc.Channel:
    """A channel to `target` (one server, or replicas balanced by gRPC): TLS (and a client
    certificate) when the settings ask for it, and the bearer token on every call when there is
    one. A malformed target raises InvalidArgument."""
    resolved = target if isinstance(target, ServerTarget) else server_target(target)
    options = [*CHANNEL_OPTIONS, ("grpc.service_config", service_config(resolved.balanced))]
    credentials = channel_credentials(settings)
    if credentials is None:
        channel = grpc.insecure_channel(resolved.channel, options=options)
    else:
        channel = grpc.secure_channel(resolved.channel, credentials, options=options)
    if settings.token:
        # Metadata rather than call credentials: gRPC sends those over TLS only, and behind a
        # mesh sidecar that terminates mTLS the hop to the server is plaintext on purpose.
        return grpc.intercept_channel(channel, BearerToken(settings.token))
    return channel


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return cast(
            grpc.ClientCallDetails,
            _Details(
                details.method, details.timeout, metadata, details.credentials,
                details.wait_for_ready, details.compression,
            ),
        )  # fmt: skip

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class Connection:
    """A channel to one artifactd server, or to replicas of one (`HOST:PORT,HOST:PORT`, a
    gRPC target URI); use it as a context manager or call `close`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        settings: ClientSettings | None = None,
        strict_env: bool | None = None,
    ) -> None:
        # the warning points at the user's line: this frame, the subclass's __init__, the caller
        guard_environment(strict_from_env() if strict_env is None else strict_env, stacklevel=4)
        if target:
            resolved = server_target(target)
        else:
            resolved = server_target(SERVER.get() or DEFAULT_TARGET, SERVER.name)
        self.target = resolved.text
        self.settings = settings or ClientSettings.from_env()
        self._channel = open_channel(resolved, self.settings)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _unary(self, call: Callable[..., T], request: object) -> T:
        """A call that is safe to repeat: retried with backoff while the server is UNAVAILABLE."""
        return self._retrying(lambda: call(request, timeout=self.settings.rpc_timeout))

    def _unary_once(self, call: Callable[..., T], request: object) -> T:
        """A call that changes state: sent once, never repeated."""
        try:
            return call(request, timeout=self.settings.rpc_timeout)
        except grpc.RpcError as exc:
            raise error(exc) from None

    def _retrying(self, attempt: Callable[[], T]) -> T:
        for tries in range(self.settings.max_retries + 1):
            try:
                return attempt()
            except grpc.RpcError as exc:
                if not retryable(exc) or tries == self.settings.max_retries:
                    raise error(exc) from None
                backoff(tries, exc)
        raise AssertionError("unreachable")

    @staticmethod
    def _stream_once(responses: Iterator[T]) -> Iterator[T]:
        """The messages of a server stream, its failure mapped like any other (not repeated)."""
        try:
            yield from responses
        except grpc.RpcError as exc:
            raise error(exc) from None


def retryable(exc: grpc.RpcError) -> bool:
    """Whether a failed call may be sent again (resumed, for a transfer): the server was
    UNAVAILABLE, or something between client and server ended the stream under the call.

    gRPC reports the latter as CANCELLED or UNKNOWN with "Stream removed" (an RST_STREAM, or an
    END_STREAM without trailers). haproxy does that to a transfer whose replica dies mid-way:
    with the request body partly forwarded it can neither retry the call elsewhere nor answer
    with a status. The client cancels none of its calls itself (an interrupted program's
    cancellation reads "Locally cancelled"), so such an ending is never one it asked for, and
    the transfer has published nothing (uploads publish only on their finish message)."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    if code in RETRYABLE:
        return True
    if code in _BROKEN_STREAM_CODES:
        return _BROKEN_STREAM in (exc.details() or "")
    return False


def error(exc: grpc.RpcError) -> ArtifactError:
    """The `artifactd.protocol.errors` exception for a failed call, with the server's error details
    (`reason`, `field_violations`, `retry_delay`) when it sent them."""
    call = exc if isinstance(exc, grpc.Call) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    details = (call.details() if call is not None else None) or str(exc)
    status = rich_status(exc)
    if code == grpc.StatusCode.UNAVAILABLE and status is None:
        # gRPC's own (no server reached) or a proxy's; a server that answered UNAVAILABLE says
        # what it could not reach (its storage, its database), and is up itself.
        details = f"artifactd server unavailable: {details}"
    return from_status(code, details, status)


def rich_status(exc: grpc.RpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a failed call carried; None without one (an older server, a
    proxy's own error) or when it does not match the call's status."""
    if not isinstance(exc, grpc.Call):
        return None
    try:
        return rpc_status.from_call(exc)
    except Exception:  # a malformed trailer or a mismatched status: the plain status stands
        return None


def suggested_delay(exc: grpc.RpcError) -> float | None:
    """Seconds the server's `RetryInfo` asks to wait before a retry, if it sent one."""
    status = rich_status(exc)
    return None if status is None else retry_delay(status)


def call(method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
    """One unary call, its failure raised as the `artifactd.protocol.errors` exception."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise error(exc) from None


def backoff(tries: int, exc: grpc.RpcError | None = None) -> None:
    """Waits before retry `tries + 1`: what the failure's `RetryInfo` suggests (at most
    `MAX_SUGGESTED_DELAY`), else exponentially longer each time; with jitter either way."""
    suggested = suggested_delay(exc) if exc is not None else None
    if suggested is not None:
        delay = min(MAX_SUGGESTED_DELAY, suggested)
    else:
        delay = min(8.0, 0.25 * 2**tries)
    time.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter


def status_code(code: int) -> grpc.StatusCode | None:
    """The status code of its number, as carried in per-item results (None: not a known one)."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return None


def code_name(code: int) -> str:
    """The name of a numeric status code, as carried in per-item results."""
    status = status_code(code)
    return status.name if status is not None else f"code {code}"
