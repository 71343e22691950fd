"""Turns a call's credentials into a `Principal`: a bearer token, else a client certificate.

The tokens file and the JWKS file are read at start-up (a mistake stops `serve`) and again on
SIGHUP; a reload that fails keeps the credentials already loaded and logs why, so a typo in a
rotated file cannot lock everyone out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from artifactd.protocol.errors import ArtifactError, Unauthenticated
from artifactd_server.auth.jwt_verifier import JwtSettings, JwtVerifier
from artifactd_server.auth.tokens import TokenTable, load_tokens
from artifactd_server.domain.identity import Principal

log = logging.getLogger(__name__)

BEARER = "bearer "


@dataclass(frozen=True)
class AuthSettings:
    tokens_file: str | None = None
    jwt: JwtSettings | None = None

    @property
    def enabled(self) -> bool:
        return self.tokens_file is not None or self.jwt is not None


@dataclass(frozen=True)
class _Credentials:
    tokens: TokenTable | None
    jwt: JwtVerifier | None


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._credentials = self._load()  # replaced whole on reload: readers need no lock

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def _load(self) -> _Credentials:
        settings = self.settings
        tokens = load_tokens(settings.tokens_file) if settings.tokens_file else None
        verifier = JwtVerifier(settings.jwt) if settings.jwt else None
        return _Credentials(tokens, verifier)

    def reload(self) -> bool:
        """Re-reads the files; on any error keeps the current credentials. True if reloaded."""
        try:
            credentials = self._load()
        except ArtifactError as exc:
            log.error("credentials NOT reloaded, the previous ones stay in force: %s", exc)
            return False
        self._credentials = credentials
        log.info("credentials reloaded")
        return True

    def authenticate(
        self, metadata: Sequence[tuple[str, str | bytes]], peer: Mapping[str, Any]
    ) -> Principal:
        """The caller, or `Unauthenticated` with a message saying what to send."""
        credentials = self._credentials
        token = _bearer_token(metadata)
        if token is not None:
            return self._from_token(credentials, token)
        names = peer.get("x509_common_name") or []
        if credentials.tokens is not None and names:
            name = names[0].decode(errors="replace")
            principal = credentials.tokens.for_certificate(name)
            if principal is not None:
                return principal
            raise Unauthenticated(
                f"client certificate {name!r} has no [[certificate]] entry in the tokens file; "
                "send a bearer token or ask an operator to add it"
            )
        raise Unauthenticated(
            "this server requires authentication: send 'authorization: Bearer <token>' "
            "(ARTIFACTD_TOKEN for the artifactd client and CLI)"
        )

    @staticmethod
    def _from_token(credentials: _Credentials, token: str) -> Principal:
        looks_like_jwt = token.count(".") == 2
        if looks_like_jwt and credentials.jwt is not None:
            return credentials.jwt.verify(token)
        if credentials.tokens is not None:
            principal = credentials.tokens.for_token(token)
            if principal is not None:
                return principal
        raise Unauthenticated("the bearer token is not valid (unknown, revoked or mistyped)")


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if not text.lower().startswith(BEARER) or not text[len(BEARER) :].strip():
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        return text[len(BEARER) :].strip()
    return None
