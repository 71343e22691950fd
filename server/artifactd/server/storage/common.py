"""Helpers every storage adapter shares: naming listed entries and the messages they raise."""

from __future__ import annotations

import logging

from artifactd.errors import AlreadyExists
from artifactd.paths import RESERVED_PREFIX, ArtifactPath, InvalidPath, parse

log = logging.getLogger(__name__)


def is_reserved(name: str) -> bool:
    """Names the server keeps for itself (temporary uploads): never listed, never addressable."""
    return name.startswith(RESERVED_PREFIX)


def child_path(parent: ArtifactPath, name: str) -> ArtifactPath | None:
    """The path of a listed entry, or None for names the path grammar refuses.

    Such names can only have been made outside artifactd; listing them would hand clients paths
    that every other call rejects, so they are left out (and logged).
    """
    try:
        return parse(f"{parent}/{name}" if parent.parts else name)
    except InvalidPath as exc:
        log.warning("skipping an entry no client could address: %s", exc.message)
        return None


def already_exists(path: ArtifactPath) -> AlreadyExists:
    return AlreadyExists(f"'{path}' already exists and the upload asked not to overwrite it")
