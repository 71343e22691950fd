"""Bearer tokens that are JWTs, verified against a JSON Web Key Set read from a file.

Only asymmetric keys (RSA, EC, OKP) are accepted: the server verifies, an identity provider
signs, and no shared secret that could mint tokens ever sits on the artifact server. Each key's
own algorithm is the only one accepted for it, which rules out `none` and the HS256-with-a-
public-key confusion. `exp` and `sub` are required; `iss` and `aud` are checked when configured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from artifactd.protocol.errors import InvalidArgument, Unauthenticated
from artifactd.protocol.grants import parse_grants
from artifactd_server.domain.identity import Principal

if TYPE_CHECKING:
    import jwt

LEEWAY_SECONDS = 30
_ASYMMETRIC = {"RSA", "EC", "OKP"}


@dataclass(frozen=True)
class JwtSettings:
    jwks_file: str
    issuer: str | None = None
    audience: str | None = None
    roles_claim: str = "roles"


class JwtVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._keys = _load_keys(settings.jwks_file)

    def verify(self, token: str) -> Principal:
        import jwt  # imported when used: see _load_keys

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not a well-formed JWT") from None
        key = self._key_for(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                issuer=self.settings.issuer,
                audience=self.settings.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the JWT has expired; get a new token") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the JWT was refused: {exc}") from None
        roles = claims.get(self.settings.roles_claim, [])
        if isinstance(roles, str):
            roles = roles.split()
        try:
            grants = parse_grants(roles if isinstance(roles, list) else [roles])
        except InvalidArgument as exc:
            raise Unauthenticated(
                f"the JWT's {self.settings.roles_claim!r} claim is not usable: {exc.message}"
            ) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the JWT's 'sub' claim must be a non-empty string")
        return Principal(subject, grants, "jwt")

    def _key_for(self, kid: object) -> jwt.PyJWK:
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise Unauthenticated("the JWT has no 'kid' header and the key set has several keys")
        key = self._keys.get(str(kid))
        if key is None:
            raise Unauthenticated(f"the JWT was signed with key {kid!r}, which is not configured")
        return key


def _load_keys(path: str) -> dict[str, jwt.PyJWK]:
    # PyJWT is imported here, when a JWKS file is configured, not with the module: it brings
    # `cryptography`, 11 MiB of every server's resident memory, which servers without JWT auth
    # (the default) do not need.
    import jwt

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(f"cannot read the JWKS file {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the JWKS file {path} is not JSON: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"the JWKS file {path} needs a non-empty 'keys' array")
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: key #{index + 1}"
        if not isinstance(entry, dict) or entry.get("kty") not in _ASYMMETRIC:
            raise InvalidArgument(
                f"{where}: only public RSA, EC or OKP keys are accepted (kty), not shared secrets"
            )
        if any(private in entry for private in ("d", "p", "q")):
            raise InvalidArgument(f"{where}: this is a private key; give the public key only")
        try:
            key = jwt.PyJWK.from_dict(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            raise InvalidArgument(f"{where}: unusable key: {exc}") from None
        kid = str(entry.get("kid", f"#{index + 1}"))
        if kid in keys:
            raise InvalidArgument(f"{where}: kid {kid!r} appears twice")
        keys[kid] = key
    return keys
