"""Roles, grants and bearer tokens: the part of authorization that issuer and server share.

A grant's text form, `role` or `role:experiment`, is what the tokens file and JWT claims hold:
`writer` is the writer role on every experiment, `writer:12` on experiment 12 only. A token is
256 random bits with a recognisable prefix; the server keeps only its sha256. `artifactd token
create` (client CLI) makes both, the server checks both, so they are defined here once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from artifactd.protocol.errors import InvalidArgument


class Role(IntEnum):
    """Ordered: a higher role includes every permission of the lower ones."""

    READER = 1
    WRITER = 2
    ADMIN = 3


@dataclass(frozen=True)
class Grant:
    """`role` on one experiment, or on all of them when `experiment_id` is None."""

    role: Role
    experiment_id: str | None = None


_ROLES = {role.name.lower(): role for role in Role}


def parse_grant(text: str) -> Grant:
    name, sep, experiment = text.strip().partition(":")
    role = _ROLES.get(name.lower())
    if role is None:
        raise InvalidArgument(
            f"unknown role {name!r} in {text!r}: use one of {', '.join(_ROLES)}, optionally "
            "followed by ':<experiment id>'"
        )
    if sep and not experiment.isdigit():
        raise InvalidArgument(f"{text!r}: the part after ':' must be an experiment id (digits)")
    # "reader:01" is experiment 1, as a request's experiment_id "01" is (a number, not text)
    return Grant(role, str(int(experiment)) if sep else None)


def parse_grants(texts: Iterable[object]) -> frozenset[Grant]:
    grants = []
    for text in texts:
        if not isinstance(text, str):
            raise InvalidArgument(
                f"a role must be a string such as 'reader' or 'writer:12', got {text!r}"
            )
        grants.append(parse_grant(text))
    return frozenset(grants)


def format_grant(grant: Grant) -> str:
    name = grant.role.name.lower()
    return name if grant.experiment_id is None else f"{name}:{grant.experiment_id}"


def token_digest(token: str) -> str:
    """What the tokens file stores: a plain sha256 is enough, tokens have 256 random bits."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A bearer token with 256 random bits, URL-safe so it fits in a header unquoted."""
    return "adt_" + secrets.token_urlsafe(32)
