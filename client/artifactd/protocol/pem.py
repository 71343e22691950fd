"""Reading a certificate or key file named in a setting, on either side of the wire."""

from __future__ import annotations

from artifactd.protocol.errors import InvalidArgument


def read_pem(path: str, what: str) -> bytes:
    """The file's bytes; an unreadable file is `InvalidArgument` naming `what` and the path."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path!r}: {exc.strerror or exc}") from None
