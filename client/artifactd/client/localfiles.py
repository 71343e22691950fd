"""Writing downloads to local disk safely: inside the destination, complete, verified.

A path returned by the server is parsed by the same grammar the server uses and must stay inside
the requested directory, and the local file it maps to must stay inside `dst_path` even when
`dst_path` contains symlinks (CVE-2024-0520 was a client trusting a server-supplied name). Each
file is written to a hidden temporary name and renamed into place only after its size and sha256
matched, so an interrupted or corrupt download never leaves a plausible-looking file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid

from artifactd.protocol.background import BACKGROUND_WRITE_THRESHOLD, BackgroundConsumer
from artifactd.protocol.directio import SequentialWriter
from artifactd.protocol.errors import DataLoss, PermissionDenied, ResourceExhausted
from artifactd.protocol.localfs import make_dirs_inside
from artifactd.protocol.paths import RESERVED_PREFIX


class Destination:
    """A download directory: every local path made for the server's paths stays inside it.

    Directories already checked are remembered, so a tree of thousands of files in a few
    directories costs a few checks, not one walk of every parent per file.
    """

    def __init__(self, dst: str) -> None:
        os.makedirs(dst, exist_ok=True)
        self.root = os.path.realpath(dst)
        self._checked: dict[tuple[str, ...], str] = {(): self.root}

    def directory(self, parts: tuple[str, ...]) -> str:
        """Creates (if needed) and returns the real local directory for `parts`."""
        real = self._checked.get(parts)
        if real is None:
            try:
                real, _ = make_dirs_inside(self.root, parts)
            except PermissionDenied as exc:
                raise PermissionDenied(
                    f"refusing to write {'/'.join(parts)!r}: {exc.message}"
                ) from None
            self._checked[parts] = real
        return real

    def file(self, parts: tuple[str, ...]) -> str:
        """The local path for the file `parts`, its parent directories created."""
        return os.path.join(self.directory(parts[:-1]), parts[-1])


def temporary_name(target: str) -> str:
    """A hidden name next to `target` for its download in progress."""
    directory, name = os.path.split(target)
    # random per file, not a counter: a name nobody can guess is one nobody can plant a
    # symlink at ahead of the download
    return os.path.join(directory, f"{RESERVED_PREFIX}{uuid.uuid4().hex[:12]}-{name}"[:255])


def publish_verified(temp: str, target: str, size: int, sha256: str | None) -> None:
    """Renames a complete download into place if its size and sha256 are the expected ones;
    deletes it otherwise (for files written out of order, which cannot be hashed on the way)."""
    try:
        actual = os.path.getsize(temp)
        if actual != size:
            raise DataLoss(f"{target!r}: received {actual} of {size} bytes")
        if sha256:
            digest = hashlib.sha256()
            with open(temp, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
            if digest.hexdigest() != sha256:
                raise DataLoss(
                    f"{target!r}: sha256 is {digest.hexdigest()} but the server stored {sha256}; "
                    "the download was discarded"
                )
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def local_write_error(exc: OSError, target: str) -> Exception:
    """A failed local write as the error to report: a full disk is RESOURCE_EXHAUSTED, as on
    the server; anything else stays the OS error it was."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(
            f"no space left on the local disk for {target!r}; the partial download was removed"
        )
    return exc


class VerifiedFile:
    """A download in progress, written to a temporary file and published by `commit` if valid."""

    def __init__(
        self,
        target: str,
        expected_size: int,
        expected_sha256: str | None,
        *,
        direct_io: bool = True,
    ) -> None:
        self.target = target
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256 or None
        self.received = 0
        self._hash = hashlib.sha256()
        self._temp = temporary_name(target)
        self._fd: int | None = os.open(
            self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
        )
        self._file = SequentialWriter(self._fd, direct=direct_io)  # see artifactd.protocol.directio
        self._writer: BackgroundConsumer | None = None
        if expected_size >= BACKGROUND_WRITE_THRESHOLD:
            self._writer = BackgroundConsumer(self._file.write, "download-writer")

    def write(self, data: bytes | memoryview) -> None:
        self.received += len(data)
        if self.received > self.expected_size:
            raise DataLoss(
                f"the server sent more than the {self.expected_size} bytes announced for "
                f"{self.target!r}"
            )
        self._hash.update(data)
        try:
            if self._writer is None:
                self._file.write(data)
            else:
                self._writer.put(data)  # raises what failed on the writer thread
        except OSError as exc:
            raise local_write_error(exc, self.target) from exc

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.finish()
            except OSError as exc:
                raise local_write_error(exc, self.target) from exc

    def commit(self) -> None:
        try:
            self._stop_writer()
        except BaseException:
            self.abort()
            raise
        if self.received != self.expected_size:
            self.abort()
            raise DataLoss(
                f"{self.target!r}: received {self.received} of {self.expected_size} bytes"
            )
        digest = self._hash.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            self.abort()
            raise DataLoss(
                f"{self.target!r}: sha256 is {digest} but the server stored "
                f"{self.expected_sha256}; the download was discarded"
            )
        try:
            self._file.finish()
        except OSError as exc:
            self.abort()
            raise local_write_error(exc, self.target) from exc
        except BaseException:
            self.abort()
            raise
        self._close()
        os.replace(self._temp, self.target)

    def _close(self) -> None:
        try:
            self._file.close()
        finally:  # the descriptor goes whatever freeing the buffer did
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self._stop_writer()
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)
