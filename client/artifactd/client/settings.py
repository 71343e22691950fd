"""Client settings read from the environment, validated once when a client is made."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from artifactd.protocol.environment import (
    CHUNK_SIZE,
    CLIENT_CERT,
    CLIENT_KEY,
    DIRECT_IO,
    MAX_RETRIES,
    RPC_TIMEOUT,
    TLS,
    TLS_CA,
    TOKEN,
    TOKEN_FILE,
    TRANSFER_TIMEOUT,
    Variable,
)
from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.pem import read_pem

DEFAULT_RPC_TIMEOUT = RPC_TIMEOUT.default
DEFAULT_RETRIES = MAX_RETRIES.default
DEFAULT_CHUNK_SIZE = CHUNK_SIZE.default
MAX_CHUNK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class ClientSettings:
    """`None` timeouts mean no deadline."""

    transfer_timeout: float | None = TRANSFER_TIMEOUT.default
    rpc_timeout: float | None = DEFAULT_RPC_TIMEOUT
    max_retries: int = DEFAULT_RETRIES
    chunk_size: int = DEFAULT_CHUNK_SIZE
    tls: bool = TLS.default
    """TLS to the server, checked against the system's CAs unless `tls_ca` names others."""
    tls_ca: str | None = None
    client_cert: str | None = None
    """A client certificate and its key, for servers that demand one (mutual TLS)."""
    client_key: str | None = None
    token: str | None = field(default=None, repr=False)
    """A bearer token (or JWT) sent with every call, for servers that require one."""
    direct_io: bool = DIRECT_IO.default
    """Downloads write large files (8 MiB+) around the page cache (`protocol.directio`)."""

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca or self.client_cert or self.client_key)

    @classmethod
    def from_env(cls) -> ClientSettings:
        return cls(
            transfer_timeout=_timeout(TRANSFER_TIMEOUT),
            rpc_timeout=_timeout(RPC_TIMEOUT),
            max_retries=_integer(MAX_RETRIES, 0, 100),
            chunk_size=_integer(CHUNK_SIZE, 1024, MAX_CHUNK_SIZE),
            tls=(TLS.get() or "").strip().lower() in ("1", "true", "yes", "on"),
            tls_ca=TLS_CA.get() or None,
            client_cert=CLIENT_CERT.get() or None,
            client_key=CLIENT_KEY.get() or None,
            token=_token(),
            direct_io=_switch(DIRECT_IO),
        )


def _token() -> str | None:
    """`ARTIFACTD_TOKEN`, else the first line of `ARTIFACTD_TOKEN_FILE` (a mounted secret)."""
    token = (TOKEN.get() or "").strip()
    if token:
        return token
    path = (TOKEN_FILE.get() or "").strip()
    if not path:
        return None
    return read_token_file(path, TOKEN_FILE.name)


def read_token_file(path: str, source: str) -> str:
    """The bearer token in the first line of the file `path` (a mounted secret); `source` says
    where the path came from (a variable, an option) in the errors."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read {source}={path!r}: {exc}") from None
    if not token:
        raise InvalidArgument(f"{source}={path!r} is empty")
    return token


def _switch(variable: Variable[bool]) -> bool:
    name = variable.name
    raw = (variable.get() or "").strip().lower()
    if not raw:
        return variable.default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"{name}={raw!r} must be true or false (1/0, yes/no, on/off)")


def _timeout(variable: Variable[float | None] | Variable[float]) -> float | None:
    name = variable.name
    raw = (variable.get() or "").strip()
    if not raw:
        return variable.default
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


def _integer(variable: Variable[int], low: int, high: int) -> int:
    name = variable.name
    raw = (variable.get() or "").strip()
    if not raw:
        return variable.default
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
            f"a client certificate needs its key: set both {CLIENT_CERT.name} and {CLIENT_KEY.name}"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(settings.tls_ca, "CA bundle") if settings.tls_ca else None,
        private_key=read_pem(settings.client_key, "client key") if settings.client_key else None,
        certificate_chain=(
            read_pem(settings.client_cert, "client certificate") if settings.client_cert else None
        ),
    )
