"""Where an artifact is: which server, which path. Resolved from what the user typed only.

Storage locations and credentials belong to the server. MLflow clients read variables such as
`MLFLOW_S3_ENDPOINT_URL` and can end up writing to `s3://bucket/key/bucket/key` or to their own
disk; this client never reads them. When one is set it says so once (or raises in strict mode),
so a user who expected it to matter learns that it does not.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

from artifactd.errors import InvalidArgument
from artifactd.paths import ROOT, ArtifactPath, parse

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_PORT = 50051
URI_SCHEMES = ("artifactd", "mlflow-artifacts")

RESERVED_STORAGE_VARIABLES = (
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_DEFAULT_ARTIFACT_ROOT",
    "MLFLOW_ARTIFACTS_DESTINATION",
    "MLFLOW_ARTIFACT_URI",
    "STORAGE_EMULATOR_HOST",
    "AZURE_STORAGE_CONNECTION_STRING",
)
"""Storage variables of the seed that change *where* artifacts go when an MLflow client reads
them (an endpoint, a root, a connection string naming an account). Credentials and TLS settings
(`AWS_CA_BUNDLE`, keys) are left alone: many machines set them for other tools, and they cannot
redirect an artifact."""

STRICT_ENV_VARIABLE = "ARTIFACTD_STRICT_ENV"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_warned: set[str] = set()
_warned_lock = threading.Lock()


class ReservedStorageVariableWarning(UserWarning):
    """A storage variable is set on the client, where artifactd ignores it."""


class ReservedStorageVariableError(InvalidArgument):
    """Strict mode: a storage variable is set on the client."""


@dataclass(frozen=True)
class Location:
    """An artifact path, and the server named with it when it came as a URI."""

    target: str | None
    path: ArtifactPath


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def guard_environment(strict: bool) -> None:
    """Warns once per variable (or raises, when strict) about storage variables on the client."""
    present = [name for name in RESERVED_STORAGE_VARIABLES if os.environ.get(name)]
    if not present:
        return
    names = ", ".join(present)
    message = (
        f"{names} {'is' if len(present) == 1 else 'are'} set in this client's environment, but "
        "artifactd ignores client-side storage settings: the server alone decides where "
        "artifacts are stored and holds the storage credentials, so artifact paths are never "
        "rewritten by them"
    )
    if strict:
        raise ReservedStorageVariableError(f"{message} (strict mode: unset them)")
    with _warned_lock:
        fresh = [name for name in present if name not in _warned]
        _warned.update(fresh)
    if fresh:
        warnings.warn(message, ReservedStorageVariableWarning, stacklevel=3)


def resolve(location: str | None, *, allow_root: bool = True) -> Location:
    """Parses a plain artifact path or an `artifactd://host:port/path` URI.

    `mlflow-artifacts://host:port/path` is accepted with the same meaning (and
    `mlflow-artifacts:/path` without a server). Storage URIs (`s3://`, `file://`, ...) are refused:
    a client never chooses a storage location.
    """
    if location is None or location == "":
        if not allow_root:
            raise InvalidArgument("an artifact path is required")
        return Location(None, ROOT)
    match = _SCHEME.match(location)
    if match is None or (len(match.group(1)) == 1 and location[2:3] in ("\\", "/")):
        return Location(None, parse(location, allow_root=allow_root))
    scheme = match.group(1).lower()
    if scheme not in URI_SCHEMES:
        raise InvalidArgument(
            f"{location!r} is a {scheme}:// storage URI; storage locations are configured on "
            "the artifactd server only. Pass an artifact path relative to the server's artifact "
            "root, or an artifactd://host:port/path URI"
        )
    parts = urlsplit(location)
    if parts.query or parts.fragment or location.endswith(("?", "#")):
        raise InvalidArgument(f"{location!r}: artifact URIs take no query or fragment")
    target = None
    if parts.netloc:
        if "@" in parts.netloc:
            shown = f"{scheme}://<credentials>@{parts.netloc.rsplit('@', 1)[1]}{parts.path}"
            raise InvalidArgument(f"{shown!r}: credentials do not belong in an artifact URI")
        try:
            port = DEFAULT_PORT if parts.port is None else parts.port
        except ValueError:
            raise InvalidArgument(f"{location!r} has an invalid port") from None
        host = parts.hostname or ""
        if not host or port == 0:
            raise InvalidArgument(f"{location!r} needs a host and a port from 1 to 65535")
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raw = parts.path[1:] if parts.path.startswith("/") else parts.path
    return Location(target, parse(raw, allow_root=allow_root))
