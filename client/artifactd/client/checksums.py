"""The checksum a client puts in an upload's finish message, computed as the bytes are read.

CRC32C where the server verifies it (GetCapabilities lists "crc32c"): it catches corruption in
transit as well, at a sixteenth of sha256's CPU, which was the client's largest cost in a
streamed upload (0.68 s of CPU per GiB here). The server computes the sha256 it stores either
way, and downloads are verified against that. An older server ignores a CRC32C, so it gets a
sha256.

Files under `CRC32C_FROM` get a sha256 all the same. Importing the `crc32c` package costs 13-17
ms here (it reads its own distribution metadata), as much as sha256 of 20-30 MB, while sha256
of a file under 1 MiB costs under 0.6 ms; so a CLI command that uploads only small files (a
directory of thousands of them among others) is faster without it, and the server, which
computes the sha256 it stores anyway, checks that one at no extra cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from artifactd.v1 import artifact_service_pb2 as pb

CRC32C_FROM = 1024 * 1024
"""Files of at least this many bytes (or of unknown size) get a CRC32C where the server
verifies it; smaller ones a sha256 (see above)."""


class UploadChecksum:
    """A running checksum of the bytes read, and the finish message that declares it."""

    def __init__(self, state: Any, declare: Callable[[Any], pb.UploadFinish]) -> None:
        self._state = state  # hashlib-like: update(bytes)
        self._declare = declare

    def update(self, data: bytes) -> None:
        self._state.update(data)

    def finish(self) -> pb.UploadFinish:
        """The finish message declaring the checksum of everything updated."""
        return self._declare(self._state)


def _sha256() -> UploadChecksum:
    return UploadChecksum(hashlib.sha256(), lambda h: pb.UploadFinish(sha256=h.hexdigest()))


def _crc32c() -> UploadChecksum:
    # imported with the first upload of CRC32C_FROM bytes or more, not with the client: the
    # package's import reads its own distribution metadata (importlib.metadata), 13-17 ms
    import crc32c

    return UploadChecksum(crc32c.CRC32CHash(), lambda c: pb.UploadFinish(crc32c=c.checksum))


def checksum_for(
    capabilities: pb.GetCapabilitiesResponse,
) -> Callable[[int | None], UploadChecksum]:
    """A new checksum, for an upload of `size` bytes (None: not known in advance), of the kind
    to send to a server with these capabilities."""
    if "crc32c" not in capabilities.upload_checksums:
        return lambda size: _sha256()
    return lambda size: _sha256() if size is not None and size < CRC32C_FROM else _crc32c()
