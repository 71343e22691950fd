"""Opaque page tokens for ListArtifacts.

A token records the last path a page returned, so the next page resumes after it by path order
(no offsets that shift when entries are added or removed between pages). It also records which
listing it belongs to, so a token cannot be replayed against another directory.
"""

from __future__ import annotations

import base64
import binascii
import json

from artifactd.errors import InvalidArgument
from artifactd.paths import ArtifactPath, InvalidPath, parse

_VERSION = 1


def encode(listing: ArtifactPath, recursive: bool, after: ArtifactPath) -> str:
    body = json.dumps({"v": _VERSION, "d": str(listing), "r": recursive, "a": str(after)})
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode(token: str, listing: ArtifactPath, recursive: bool) -> ArtifactPath:
    """The path to resume after; `InvalidArgument` for a token not made for this listing."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if body["v"] != _VERSION:
            raise ValueError("version")
        if body["d"] != str(listing) or body["r"] != recursive:
            raise InvalidArgument(
                "page_token belongs to another listing (a different path or recursive flag)"
            )
        after = parse(body["a"], what="page_token")
    except (binascii.Error, ValueError, KeyError, TypeError, InvalidPath):
        raise InvalidArgument(
            "page_token is not one this server issued; start again with an empty token"
        ) from None
    if not after.is_relative_to(listing):
        raise InvalidArgument("page_token points outside the listed directory")
    return after
