"""Client settings read from the environment, validated once when a client is made."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import grpc

from artifactd.protocol.defaults import (
    CHUNK_SIZE_VARIABLE,
    CLIENT_CERT_VARIABLE,
    CLIENT_KEY_VARIABLE,
    DIRECT_IO_VARIABLE,
    RETRIES_VARIABLE,
    RPC_TIMEOUT_VARIABLE,
    TLS_CA_VARIABLE,
    TLS_VARIABLE,
    TOKEN_FILE_VARIABLE,
    TOKEN_VARIABLE,
    TRANSFER_TIMEOUT_VARIABLE,
)
from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.pem import read_pem

DEFAULT_RPC_TIMEOUT = 60.0
DEFAULT_RETRIES = 5
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class ClientSettings:
    """`None` timeouts mean no deadline."""

    transfer_timeout: float | None = None
    rpc_timeout: float | None = DEFAULT_RPC_TIMEOUT
    max_retries: int = DEFAULT_RETRIES
    chunk_size: int = DEFAULT_CHUNK_SIZE
    tls: bool = False
    """TLS to the server, checked against the system's CAs unless `tls_ca` names others."""
    tls_ca: str | None = None
    client_cert: str | None = None
    """A client certificate and its key, for servers that demand one (mutual TLS)."""
    client_key: str | None = None
    token: str | None = field(default=None, repr=False)
    """A bearer token (or JWT) sent with every call, for servers that require one."""
    direct_io: bool = True
    """Downloads write large files (8 MiB+) around the page cache (`protocol.directio`)."""

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca or self.client_cert or self.client_key)

    @classmethod
    def from_env(cls) -> ClientSettings:
        env = os.environ
        return cls(
            transfer_timeout=_timeout(TRANSFER_TIMEOUT_VARIABLE, None),
            rpc_timeout=_timeout(RPC_TIMEOUT_VARIABLE, DEFAULT_RPC_TIMEOUT),
            max_retries=_integer(RETRIES_VARIABLE, DEFAULT_RETRIES, 0, 100),
            chunk_size=_integer(CHUNK_SIZE_VARIABLE, DEFAULT_CHUNK_SIZE, 1024, MAX_CHUNK_SIZE),
            tls=env.get(TLS_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"),
            tls_ca=env.get(TLS_CA_VARIABLE) or None,
            client_cert=env.get(CLIENT_CERT_VARIABLE) or None,
            client_key=env.get(CLIENT_KEY_VARIABLE) or None,
            token=_token(),
            direct_io=_switch(DIRECT_IO_VARIABLE, True),
        )


def _token() -> str | None:
    """`ARTIFACTD_TOKEN`, else the first line of `ARTIFACTD_TOKEN_FILE` (a mounted secret)."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if token:
        return token
    path = os.environ.get(TOKEN_FILE_VARIABLE, "").strip()
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read {TOKEN_FILE_VARIABLE}={path!r}: {exc}") from None
    if not token:
        raise InvalidArgument(f"{TOKEN_FILE_VARIABLE}={path!r} is empty")
    return token


def _switch(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"{name}={raw!r} must be true or false (1/0, yes/no, on/off)")


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


def channel_credentials(settings: ClientSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials for the channel, or None for plaintext."""
    if not settings.uses_tls:
        return None
    if bool(settings.client_cert) != bool(settings.client_key):
        raise InvalidArgument(
            f"a client certificate needs its key: set both {CLIENT_CERT_VARIABLE} and "
            f"{CLIENT_KEY_VARIABLE}"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(settings.tls_ca, "CA bundle") if settings.tls_ca else None,
        private_key=read_pem(settings.client_key, "client key") if settings.client_key else None,
        certificate_chain=(
            read_pem(settings.client_cert, "client certificate") if settings.client_cert else None
        ),
    )
