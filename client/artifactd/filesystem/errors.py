"""artifactd's errors as the Python exceptions fsspec users catch.

pandas, pyarrow and Dask test for `FileNotFoundError` (a missing partition, an optional file)
and `PermissionError`, not for `artifactd.protocol.errors.NotFound`. Each error is raised as the
built-in exception a local file system would raise in its place, with `errno` and `filename`
set, and the artifactd error kept as `__cause__` (its gRPC `code`, `reason` and details).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from artifactd.protocol import errors


def os_error(exc: errors.ArtifactError, path: str) -> Exception:
    """The built-in exception for an artifactd error about `path`.

    Not found, already exists, refused credentials or permissions, a deadline and an
    unreachable server have their own built-in classes; a request the server refuses as
    malformed (a path outside the grammar, a bad range) is a `ValueError`, as for a bad
    argument anywhere in Python; every other failure is a plain `OSError` with the server's
    message.
    """
    message = exc.message
    if isinstance(exc, errors.NotFound):
        return FileNotFoundError(errno.ENOENT, message, path)
    if isinstance(exc, errors.AlreadyExists):
        return FileExistsError(errno.EEXIST, message, path)
    if isinstance(exc, errors.PermissionDenied | errors.Unauthenticated):
        return PermissionError(errno.EACCES, message, path)
    if isinstance(exc, errors.InvalidArgument | errors.OutOfRange):
        return ValueError(message)
    if isinstance(exc, errors.DeadlineExceeded):
        return TimeoutError(errno.ETIMEDOUT, message, path)
    if isinstance(exc, errors.Unavailable):
        return ConnectionError(message)
    if isinstance(exc, errors.Unimplemented):
        return NotImplementedError(message)
    return OSError(errno.EIO, message, path)


def is_a_directory(path: str, cause: errors.ArtifactError | None = None) -> IsADirectoryError:
    """What reading or replacing a directory as a file raises."""
    message = cause.message if cause is not None else f"'{path}' is a directory, not a file"
    return IsADirectoryError(errno.EISDIR, message, path)


@contextmanager
def translated(path: str) -> Iterator[None]:
    """Raises artifactd errors in the block as their built-in exceptions (see `os_error`)."""
    try:
        yield
    except errors.ArtifactError as exc:
        raise os_error(exc, path) from exc
