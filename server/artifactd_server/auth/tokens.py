"""The tokens file: sha256 digests of bearer tokens, and certificate names, mapped to principals.

```toml
[[token]]
principal = "alice"
sha256 = "<hex sha256 of the token>"   # `artifactd token create` prints both
roles = ["reader", "writer:12"]

[[certificate]]                          # mutual TLS: a client certificate's common name
common_name = "training-job"
roles = ["writer:12"]
```

`roles = []` is allowed: the principal authenticates and may do nothing but ask for the
server's capabilities and list experiments (an empty listing) — an account kept but suspended,
as a JWT without a roles claim is.

Only digests are stored, so the file (or a backup of it) cannot be replayed. A plain sha256 is
enough here, unlike for passwords: tokens are 256 random bits, so there is nothing to guess.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.grants import parse_grants, token_digest
from artifactd_server.domain.identity import Principal

_DIGEST = re.compile(r"[0-9a-f]{64}")
_TOKEN_KEYS = {"principal", "sha256", "roles"}
_CERTIFICATE_KEYS = {"common_name", "roles"}


@dataclass(frozen=True)
class TokenTable:
    by_digest: dict[str, Principal]
    by_common_name: dict[str, Principal]

    def for_token(self, token: str) -> Principal | None:
        return self.by_digest.get(token_digest(token))

    def for_certificate(self, common_name: str) -> Principal | None:
        return self.by_common_name.get(common_name)


def load_tokens(path: str) -> TokenTable:
    """Reads and checks the whole file; any mistake raises `InvalidArgument` naming the entry."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(f"cannot read the tokens file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the tokens file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"token", "certificate"}
    if unknown:
        raise InvalidArgument(
            f"the tokens file {path} has unknown tables {sorted(unknown)}: only [[token]] and "
            "[[certificate]] entries are allowed"
        )
    by_digest: dict[str, Principal] = {}
    for index, entry in enumerate(_entries(data, "token", path)):
        where = f"{path}: [[token]] #{index + 1}"
        _check_keys(entry, _TOKEN_KEYS, where)
        digest = str(entry["sha256"]).lower()
        if not _DIGEST.fullmatch(digest):
            raise InvalidArgument(f"{where}: sha256 must be 64 hex digits (the token's digest)")
        if digest in by_digest:
            raise InvalidArgument(f"{where}: the same token digest appears twice")
        by_digest[digest] = Principal(
            _name(entry["principal"], where), _grants(entry, where), "token"
        )
    by_name: dict[str, Principal] = {}
    for index, entry in enumerate(_entries(data, "certificate", path)):
        where = f"{path}: [[certificate]] #{index + 1}"
        _check_keys(entry, _CERTIFICATE_KEYS, where)
        name = _name(entry["common_name"], where)
        if name in by_name:
            raise InvalidArgument(f"{where}: common_name {name!r} appears twice")
        by_name[name] = Principal(name, _grants(entry, where), "certificate")
    return TokenTable(by_digest, by_name)


def _entries(data: dict[str, Any], table: str, path: str) -> list[dict[str, Any]]:
    entries = data.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidArgument(f"the tokens file {path}: write [[{table}]] entries (an array)")
    return entries


def _check_keys(entry: dict[str, Any], keys: set[str], where: str) -> None:
    missing, unknown = keys - set(entry), set(entry) - keys
    if missing or unknown:
        raise InvalidArgument(
            f"{where}: needs exactly the keys {sorted(keys)}"
            + (f"; missing {sorted(missing)}" if missing else "")
            + (f"; unknown {sorted(unknown)}" if unknown else "")
        )


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise InvalidArgument(f"{where}: the name must be a non-empty string (at most 256)")
    return value.strip()


def _grants(entry: dict[str, Any], where: str) -> frozenset[Any]:
    roles = entry["roles"]
    if not isinstance(roles, list):
        raise InvalidArgument(f"{where}: roles must be a list such as ['reader'] (or [])")
    try:
        return parse_grants(roles)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc.message}") from None
