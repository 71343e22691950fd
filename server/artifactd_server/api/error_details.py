"""The `google.rpc` error details every failed call carries, built in one place.

Each failure ends with a `google.rpc.Status` in the `grpc-status-details-bin` trailer, with the
same code and message as the plain status, and:

- always an `ErrorInfo`: domain `artifactd`, a stable UPPER_SNAKE `reason` per error class
  (NOT_FOUND, INVALID_PATH, ...), and metadata: the RPC's `method`, and the request's `path`
  when it has one;
- a `BadRequest` field violation when the error names the request field it refuses
  (`InvalidArgument.field`, always set for a path that breaks the grammar);
- a `RetryInfo` when a retry may succeed: UNAVAILABLE (a storage or the backend store),
  RESOURCE_EXHAUSTED and ABORTED.
"""

from __future__ import annotations

from typing import NoReturn, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from artifactd.protocol.errors import DOMAIN, ArtifactError, InvalidArgument
from artifactd.protocol.paths import InvalidPath

REASONS: dict[type[ArtifactError], str] = {InvalidPath: "INVALID_PATH"}
"""Reasons that say more than the status code; every other error's reason is its code's name."""

BACKEND_STORE_UNAVAILABLE = "BACKEND_STORE_UNAVAILABLE"
INTERNAL = "INTERNAL"

Metadata: TypeAlias = tuple[tuple[str, str | bytes], ...]

RETRY_DELAYS: dict[grpc.StatusCode, float] = {
    grpc.StatusCode.UNAVAILABLE: 1.0,
    grpc.StatusCode.ABORTED: 1.0,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 5.0,
}
"""Seconds a client should wait before retrying, for the codes where a retry may work."""
BACKEND_STORE_RETRY_DELAY = 2.0

MAX_MESSAGE = 2048
"""Longest status message: it travels twice (grpc-message and inside the details), and a
message echoing a huge forged id must not push the trailers past the client's 8 KiB limit."""
MAX_VALUE = 256
"""Longest metadata value or violation description: the status message already says it all,
and the trailers must stay well under a client's metadata limit (8 KiB by default)."""


def reason_of(exc: ArtifactError) -> str:
    for cls in type(exc).__mro__:
        if cls in REASONS:
            return REASONS[cls]
    return exc.code.name


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str],
    *,
    field: str | None = None,
    retry_delay: float | None = None,
) -> status_pb2.Status:
    """A `google.rpc.Status` with an `ErrorInfo` and, when given, `BadRequest` and `RetryInfo`."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    details: list[Message] = [
        error_details_pb2.ErrorInfo(
            reason=reason,
            domain=DOMAIN,
            metadata={key: _cut(value) for key, value in metadata.items() if value},
        )
    ]
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=_cut(message), reason=reason
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round(retry_delay * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def status_of(exc: ArtifactError, metadata: dict[str, str]) -> status_pb2.Status:
    """The `google.rpc.Status` for a domain error; `metadata` goes into its `ErrorInfo`."""
    field = exc.field if isinstance(exc, InvalidArgument) else None
    return rich_status(
        exc.code,
        exc.message,
        reason_of(exc),
        metadata,
        field=field,
        retry_delay=RETRY_DELAYS.get(exc.code),
    )


def abort(context: grpc.ServicerContext, status: status_pb2.Status) -> NoReturn:
    """Ends the call with `status`: its code and message, and the details in the trailers.

    Trailers set before are kept (abort_with_status alone would replace them).
    """
    wire = rpc_status.to_status(status)
    trailers: Metadata = (*(context.trailing_metadata() or ()), *wire.trailing_metadata)
    context.abort_with_status(_Status(wire.code, wire.details, trailers))


def abort_with(
    context: grpc.ServicerContext, exc: ArtifactError, metadata: dict[str, str]
) -> NoReturn:
    """Ends the call with the status and details of a domain error."""
    abort(context, status_of(exc, metadata))


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
