"""Helpers every storage adapter shares: naming listed entries and the messages they raise."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from artifactd.protocol.errors import AlreadyExists, InvalidArgument, NotFound
from artifactd.protocol.paths import RESERVED_PREFIX, ArtifactPath, InvalidPath, parse
from artifactd_server.settings import STORAGE_TIMEOUT

log = logging.getLogger(__name__)

TIMEOUT_VARIABLE = STORAGE_TIMEOUT.name
DEFAULT_TIMEOUT = STORAGE_TIMEOUT.default
REQUEST_ATTEMPTS = 3
"""Tries per storage request where the backend's library lets us say (botocore's default)."""


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


def transfer_timeout(env: Mapping[str, str]) -> float:
    """MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT: seconds one storage request may take (default 60).

    MLflow honours it on three backends; here every network backend does, so a storage server
    that stops answering fails the RPC with UNAVAILABLE instead of hanging it. Checked at start-up.
    """
    raw = (STORAGE_TIMEOUT.get(env) or "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise InvalidArgument(f"{TIMEOUT_VARIABLE} {raw!r} must be a positive number of seconds")
    return value


_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def check_token(token: str) -> str:
    """A resumable upload's token names a file: only the server's own 32-hex tokens are taken."""
    if not _TOKEN.match(token):
        raise NotFound("no kept upload by that token")
    return token
