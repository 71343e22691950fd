"""Errors shared by the server, its storage adapters and the client.

Each class names the canonical gRPC status it travels as, so the server maps a storage failure to
a status code in one place and the client turns a status back into the same exception:
`except artifactd.protocol.errors.NotFound` works on both sides of the wire.

The server also sends `google.rpc` error details with each status (`ErrorInfo`, `BadRequest`,
`RetryInfo`); an exception made from a received status carries what they say as `reason`,
`field_violations` and `retry_delay` (None and empty when the server sent no details).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:  # imported where a status is read: 15 ms of every CLI command's start-up
    from google.rpc import error_details_pb2, status_pb2

DOMAIN = "artifactd"
"""The `ErrorInfo.domain` of every error this server sends."""

QUOTED_PREFIX = 128
"""Characters of a refused value that a message or a per-file result quotes: enough to
recognise it, and a forged 10 MB path cannot make a response larger than a client accepts."""


def excerpt(value: str, limit: int = QUOTED_PREFIX) -> str:
    """`value` as a message may quote it: whole when short, else its start and its length."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"


class ArtifactError(Exception):
    """Base class; `code` is the gRPC status the error travels as."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason: str | None = None
        """`ErrorInfo.reason` as received (NOT_FOUND, INVALID_PATH, ...); None if not sent."""
        self.error_metadata: dict[str, str] = {}
        """`ErrorInfo.metadata` as received (`method`, and `path` when the request had one)."""
        self.field_violations: list[tuple[str, str]] = []
        """(field, description) pairs of a received `BadRequest`."""
        self.retry_delay: float | None = None
        """Seconds the server suggests waiting before a retry (`RetryInfo`); None if not sent."""


class InvalidArgument(ArtifactError):
    """A request field the server refuses; `field` names it when known (`path`, `run_id`)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(ArtifactError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ArtifactError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ArtifactError):
    """The request is well formed but the stored state forbids it (a file where a directory is)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ArtifactError):
    code = grpc.StatusCode.OUT_OF_RANGE


class DataLoss(ArtifactError):
    """Bytes did not match their declared size or digest; nothing was stored or written."""

    code = grpc.StatusCode.DATA_LOSS


class PermissionDenied(ArtifactError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ArtifactError):
    """No credentials, or credentials the server does not accept (a missing or expired token)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Aborted(ArtifactError):
    """A transfer was interrupted; nothing of it became visible."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(ArtifactError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ArtifactError):
    """The server or its storage cannot be reached now; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ArtifactError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ArtifactError):
    code = grpc.StatusCode.CANCELLED


class Unimplemented(ArtifactError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ArtifactError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[ArtifactError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        OutOfRange,
        DataLoss,
        PermissionDenied,
        Unauthenticated,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        Internal,
    )
}


def from_status(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None
) -> ArtifactError:
    """The exception for a status received over the wire (unknown codes become `ArtifactError`).

    `status`, the call's `google.rpc.Status` when the server sent one, fills in the details.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        err = ArtifactError(f"{code.name}: {message}")
        err.code = code
    else:
        err = cls(message)
    if status is not None:
        _read_details(err, status)
    return err


def _read_details(err: ArtifactError, status: status_pb2.Status) -> None:
    """Copies the details `err` understands onto it; unknown or broken ones are skipped."""
    from google.rpc import error_details_pb2

    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            err.reason = info.reason or None
            err.error_metadata = dict(info.metadata)
        elif detail.Unpack(bad):
            err.field_violations += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(retry):
            err.retry_delay = _seconds(retry)


def retry_delay(status: status_pb2.Status) -> float | None:
    """The seconds to wait before a retry that a status's `RetryInfo` suggests, if it has one."""
    from google.rpc import error_details_pb2

    retry = error_details_pb2.RetryInfo()
    for detail in status.details:
        if detail.Unpack(retry):
            return _seconds(retry)
    return None


def _seconds(retry: error_details_pb2.RetryInfo) -> float:
    delay = retry.retry_delay
    return max(0.0, delay.seconds + delay.nanos / 1e9)
