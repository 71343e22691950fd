"""Opaque page tokens: ListArtifacts, ListExperiments and ListRuns.

A token records where the previous page stopped (the last path, id, or sort key it returned),
so the next page resumes after it by sort order: no offsets that shift when entries are added
or removed between pages. It also records which listing it belongs to, so a token cannot be
replayed against another directory or another filter.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.paths import ArtifactPath, InvalidPath, parse

_VERSION = 1


def _pack(body: dict[str, Any]) -> str:
    raw = json.dumps({"v": _VERSION, **body}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _unpack(token: str) -> dict[str, Any]:
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("version")
    except (binascii.Error, ValueError, TypeError):
        raise _foreign() from None
    return body


def _foreign() -> InvalidArgument:
    return InvalidArgument(
        "page_token is not one this server issued; start again with an empty token"
    )


def _other_listing() -> InvalidArgument:
    return InvalidArgument(
        "page_token belongs to another listing (different path, filter or flags); "
        "start again with an empty token"
    )


def encode(listing: ArtifactPath, recursive: bool, after: ArtifactPath) -> str:
    return _pack({"d": str(listing), "r": recursive, "a": str(after)})


def decode(token: str, listing: ArtifactPath, recursive: bool) -> ArtifactPath:
    """The path to resume after; `InvalidArgument` for a token not made for this listing."""
    body = _unpack(token)
    try:
        if body["d"] != str(listing) or body["r"] != recursive:
            raise _other_listing()
        after = parse(body["a"], what="page_token")
    except (KeyError, TypeError, InvalidPath):
        raise _foreign() from None
    if not after.is_relative_to(listing):
        raise InvalidArgument("page_token points outside the listed directory")
    return after


def encode_cursor(listing: list[Any], position: list[Any]) -> str:
    """A token for metadata listings: `listing` identifies the query, `position` the last row."""
    return _pack({"l": listing, "p": position})


def decode_cursor(token: str, listing: list[Any]) -> list[Any]:
    body = _unpack(token)
    if body.get("l") != listing:
        raise _other_listing()
    position = body.get("p")
    if not isinstance(position, list):
        raise _foreign()
    return position
