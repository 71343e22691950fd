"""TLS for the server: certificate and key, and optionally a CA whose client certificates it
demands (mutual TLS). Files are read and checked at start-up, so a wrong path or a key that does
not match fails `serve` with a message instead of the first handshake.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

import grpc

from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.pem import read_pem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.client_ca)


def _read(path: str, what: str) -> bytes:
    data = read_pem(path, what)
    if b"-----BEGIN" not in data:
        raise InvalidArgument(f"the {what} {path!r} is not PEM (no -----BEGIN line)")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials | None:
    """The credentials to serve with, or None for plaintext."""
    if not files.enabled:
        return None
    if not (files.cert and files.key):
        raise InvalidArgument(
            "TLS needs both --tls-cert and --tls-key (--tls-client-ca adds client certificates)"
        )
    cert = _read(files.cert, "TLS certificate (--tls-cert)")
    key = _read(files.key, "TLS private key (--tls-key)")
    _check_pair(cert, key, files)
    client_ca = _read(files.client_ca, "client CA (--tls-client-ca)") if files.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _check_pair(cert: bytes, key: bytes, files: TlsFiles) -> None:
    """Refuses a key that does not belong to the certificate (gRPC would fail every handshake)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        public = x509.load_pem_x509_certificate(cert).public_key()
    except ValueError as exc:
        raise InvalidArgument(f"the TLS certificate {files.cert!r} cannot be read: {exc}") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"the TLS private key {files.key!r} cannot be read (encrypted keys are not "
            f"supported): {exc}"
        ) from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise InvalidArgument(
            f"the TLS private key {files.key!r} does not belong to the certificate {files.cert!r}"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, tls: bool, authenticated: bool = False) -> str | None:
    """The warning for serving beyond this machine without TLS or authentication (None when
    there is nothing to say)."""
    if is_loopback(host) or (tls and authenticated):
        return None
    if not tls and not authenticated:
        return (
            f"serving PLAINTEXT gRPC on {host}, beyond this machine, WITHOUT TLS OR "
            "AUTHENTICATION: anyone who can reach the port can read and change every artifact. "
            "Use --tls-cert and --tls-key (and --tls-client-ca) with --auth-tokens-file or "
            "--auth-jwks-file, or bind 127.0.0.1 behind a mesh that provides mTLS"
        )
    if not tls:
        return (
            f"serving PLAINTEXT gRPC on {host}, beyond this machine: bearer tokens and artifacts "
            "cross the network unencrypted. Use --tls-cert and --tls-key, unless a mesh sidecar "
            "encrypts this hop"
        )
    return (
        f"serving TLS on {host} WITHOUT AUTHENTICATION: anyone who can reach the port can read "
        "and change every artifact. Use --auth-tokens-file or --auth-jwks-file"
    )
