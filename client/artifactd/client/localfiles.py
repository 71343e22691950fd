"""Writing downloads to local disk safely: inside the destination, complete, verified.

A path returned by the server is parsed by the same grammar the server uses and must stay inside
the requested directory, and the local file it maps to must stay inside `dst_path` even when
`dst_path` contains symlinks (CVE-2024-0520 was a client trusting a server-supplied name). Each
file is written to a hidden temporary name and renamed into place only after its size and sha256
matched, so an interrupted or corrupt download never leaves a plausible-looking file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid

from artifactd.errors import DataLoss, PermissionDenied
from artifactd.localfs import make_dirs_inside
from artifactd.paths import RESERVED_PREFIX


def local_target(dst_real: str, parts: tuple[str, ...]) -> str:
    """The local path for `parts` under the (resolved) directory `dst_real`, parents created."""
    try:
        parent, _ = make_dirs_inside(dst_real, parts[:-1])
    except PermissionDenied as exc:
        raise PermissionDenied(f"refusing to write {'/'.join(parts)!r}: {exc.message}") from None
    return os.path.join(parent, parts[-1])


def make_dir(dst_real: str, parts: tuple[str, ...]) -> None:
    try:
        make_dirs_inside(dst_real, parts)
    except PermissionDenied as exc:
        raise PermissionDenied(f"refusing to create {'/'.join(parts)!r}: {exc.message}") from None


class VerifiedFile:
    """A download in progress, written to a temporary file and published by `commit` if valid."""

    def __init__(self, target: str, expected_size: int, expected_sha256: str | None) -> None:
        self.target = target
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256 or None
        self.received = 0
        self._hash = hashlib.sha256()
        directory, name = os.path.split(target)
        self._temp = os.path.join(
            directory, f"{RESERVED_PREFIX}{uuid.uuid4().hex[:12]}-{name}"[:255]
        )
        self._file = open(self._temp, "wb")  # noqa: SIM115 - closed by commit/abort

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.expected_size:
            raise DataLoss(
                f"the server sent more than the {self.expected_size} bytes announced for "
                f"{self.target!r}"
            )
        self._hash.update(data)
        self._file.write(data)

    def seek_to(self, offset: int) -> None:
        """Restarts writing at `offset` (a resumed download); the hash must be rebuilt."""
        self._file.flush()
        self._file.truncate(offset)
        self._file.seek(offset)
        self._hash = hashlib.sha256()
        with open(self._temp, "rb") as fh:
            while block := fh.read(1 << 20):
                self._hash.update(block)
        self.received = offset

    def commit(self) -> None:
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
        self._file.close()
        os.replace(self._temp, self.target)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)
