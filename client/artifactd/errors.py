"""Errors shared by the server, its storage adapters and the client.

Each class names the canonical gRPC status it travels as, so the server maps a storage failure to
a status code in one place and the client turns a status back into the same exception:
`except artifactd.errors.NotFound` works on both sides of the wire.
"""

from __future__ import annotations

import grpc


class ArtifactError(Exception):
    """Base class; `code` is the gRPC status the error travels as."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ArtifactError):
    code = grpc.StatusCode.INVALID_ARGUMENT


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


def from_status(code: grpc.StatusCode, message: str) -> ArtifactError:
    """The exception for a status received over the wire (unknown codes become `ArtifactError`)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = ArtifactError(f"{code.name}: {message}")
        err.code = code
        return err
    return cls(message)
