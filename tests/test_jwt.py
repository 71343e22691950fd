"""Bearer JWTs verified against a JWKS file: real keys and signatures (PyJWT, cryptography), the
verifier directly for every refusal, and a server process that admits a token's roles.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from artifactd.client import ArtifactClient
from artifactd.client.settings import ClientSettings
from artifactd.protocol.errors import InvalidArgument, PermissionDenied, Unauthenticated
from artifactd.protocol.grants import Grant, Role
from artifactd_server.auth.jwt_verifier import JwtSettings, JwtVerifier

from servers import ServerProcess, start_server

ISSUER, AUDIENCE = "https://idp.test", "artifactd"


class Keys:
    def __init__(self, directory: Path) -> None:
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = [
            {**json.loads(ECAlgorithm.to_jwk(self.ec.public_key())), "kid": "ec-1", "alg": "ES256"},
            {**json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key())), "kid": "rsa-1",
             "alg": "RS256"},
        ]  # fmt: skip
        self.jwks = directory / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": public}))

    def token(self, claims: dict[str, Any] | None = None, kid: str = "ec-1", **header: Any) -> str:
        now = int(time.time())
        body = {"sub": "carol", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now,
                "roles": ["reader", "writer:1"], **(claims or {})}  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        key, alg = (self.ec, "ES256") if kid.startswith("ec") else (self.rsa, "RS256")
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **header})


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("jwks"))


@pytest.fixture(scope="module")
def verifier(keys: Keys) -> JwtVerifier:
    return JwtVerifier(JwtSettings(str(keys.jwks), ISSUER, AUDIENCE))


def test_a_valid_token_gives_its_subject_and_roles(keys: Keys, verifier: JwtVerifier) -> None:
    for kid in ("ec-1", "rsa-1"):
        principal = verifier.verify(keys.token(kid=kid))
        assert principal.name == "carol" and principal.method == "jwt"
        assert principal.grants == {Grant(Role.READER), Grant(Role.WRITER, "1")}
    spaced = verifier.verify(keys.token({"roles": "admin:3 reader"}))
    assert spaced.grants == {Grant(Role.ADMIN, "3"), Grant(Role.READER)}


def _hs256_with_the_public_key(keys: Keys) -> str:
    """The algorithm-confusion attack: an HMAC keyed with the server's public key."""
    public = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = jwt.utils.base64url_encode(
        json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode()
    )
    body = jwt.utils.base64url_encode(
        json.dumps(
            {
                "sub": "mallory",
                "exp": int(time.time()) + 300,
                "iss": ISSUER,
                "aud": AUDIENCE,
                "roles": ["admin"],
            }
        ).encode()
    )
    signing_input = header + b"." + body
    signature = hmac.new(public, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


def _unsigned(keys: Keys) -> str:
    token = keys.token()
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": "ec-1"}).encode())
    return header.decode() + "." + token.split(".")[1] + "."


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda k: k.token({"exp": int(time.time()) - 120}), "expired"),
        (lambda k: k.token({"iss": "https://elsewhere"}), "issuer"),
        (lambda k: k.token({"aud": "another-service"}), "(?i)audience"),
        (lambda k: k.token({"sub": None}), "sub"),
        (lambda k: k.token({"exp": None}), "exp"),
        (lambda k: k.token(kid="ec-unknown"), "not configured"),
        (lambda k: k.token({"roles": ["superuser"]}), "unknown role"),
        (lambda k: k.token()[:-4] + "AAAA", "refused"),
        (_hs256_with_the_public_key, "refused"),
        (_unsigned, "refused"),
        (lambda k: "a.b.c", "well-formed"),
    ],
)
def test_bad_tokens_are_refused(keys: Keys, verifier: JwtVerifier, make: Any, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        verifier.verify(make(keys))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "not shared secrets"),
        ({"keys": []}, "non-empty 'keys'"),
        ({"nope": 1}, "non-empty 'keys'"),
        ("private", "private key"),
    ],
)
def test_bad_key_sets_are_refused(tmp_path: Path, keys: Keys, content: Any, message: str) -> None:
    if content == "private":
        private = json.loads(ECAlgorithm.to_jwk(keys.ec))
        content = {"keys": [private]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InvalidArgument, match=message):
        JwtVerifier(JwtSettings(str(path)))


@pytest.fixture(scope="module")
def jwt_server(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("jwt-server")
    server = start_server(
        base / "store", base / "run", "--auth-jwks-file", str(keys.jwks),
        "--auth-jwt-issuer", ISSUER, "--auth-jwt-audience", AUDIENCE,
        client=ClientSettings(token=keys.token({"roles": ["admin"]})),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log_text()


def test_the_server_admits_a_jwt_by_its_roles(
    jwt_server: ServerProcess, keys: Keys, tmp_path: Path
) -> None:
    source = tmp_path / "a.txt"
    source.write_text("jwt")
    writer = ClientSettings(token=keys.token({"roles": ["writer"]}), max_retries=0)
    with ArtifactClient(jwt_server.target, settings=writer) as client:
        client.log_artifact(source, "jwt")
        assert [f.path for f in client.list_artifacts("jwt")] == ["jwt/a.txt"]
        with pytest.raises(PermissionDenied, match="'admin'"):
            client.delete_artifacts("jwt")
    expired = ClientSettings(token=keys.token({"exp": int(time.time()) - 300}), max_retries=0)
    with (
        ArtifactClient(jwt_server.target, settings=expired) as client,
        pytest.raises(Unauthenticated, match="expired"),
    ):
        client.list_artifacts("jwt")


def _maps_cryptography(server: ServerProcess) -> bool:
    """Whether the server process has `cryptography`'s compiled library mapped (PyJWT brings it)."""
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    return any("/cryptography/" in line for line in maps.splitlines())


def test_only_a_server_with_jwt_auth_loads_pyjwt(jwt_server: ServerProcess, tmp_path: Path) -> None:
    """PyJWT and `cryptography` cost every server about 11 MiB of resident memory: a server
    without `--auth-jwks-file` (the default) never imports them."""
    assert _maps_cryptography(jwt_server), "the JWT server verifies with cryptography"
    plain = start_server(tmp_path / "store", tmp_path / "run")
    try:
        assert not _maps_cryptography(plain), "a server without JWT auth loaded cryptography"
    finally:
        assert plain.stop() == 0, plain.log_text()
