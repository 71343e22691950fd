"""Client settings read from the environment, validated once when a client is made."""

from __future__ import annotations

import os
from dataclasses import dataclass

from artifactd.errors import InvalidArgument

TRANSFER_TIMEOUT_VARIABLE = "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT"
RPC_TIMEOUT_VARIABLE = "ARTIFACTD_RPC_TIMEOUT"
RETRIES_VARIABLE = "ARTIFACTD_MAX_RETRIES"
CHUNK_SIZE_VARIABLE = "ARTIFACTD_CHUNK_SIZE"
SERVER_VARIABLE = "ARTIFACTD_SERVER"

DEFAULT_RPC_TIMEOUT = 60.0
DEFAULT_RETRIES = 5
DEFAULT_CHUNK_SIZE = 256 * 1024
MAX_CHUNK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class ClientSettings:
    """`None` timeouts mean no deadline."""

    transfer_timeout: float | None = None
    rpc_timeout: float | None = DEFAULT_RPC_TIMEOUT
    max_retries: int = DEFAULT_RETRIES
    chunk_size: int = DEFAULT_CHUNK_SIZE

    @classmethod
    def from_env(cls) -> ClientSettings:
        return cls(
            transfer_timeout=_timeout(TRANSFER_TIMEOUT_VARIABLE, None),
            rpc_timeout=_timeout(RPC_TIMEOUT_VARIABLE, DEFAULT_RPC_TIMEOUT),
            max_retries=_integer(RETRIES_VARIABLE, DEFAULT_RETRIES, 0, 100),
            chunk_size=_integer(CHUNK_SIZE_VARIABLE, DEFAULT_CHUNK_SIZE, 1024, MAX_CHUNK_SIZE),
        )


def _timeout(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(
            f"{name}={raw!r} is not a number of seconds (-1: no timeout)"
        ) from None
    if value == -1:
        return None
    if value <= 0:
        raise InvalidArgument(f"{name}={raw!r} must be positive seconds, or -1 for no timeout")
    return value


def _integer(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise InvalidArgument(f"{name}={raw!r} must be between {low} and {high}")
    return value
