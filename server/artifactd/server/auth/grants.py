"""The text form of a grant, shared by the tokens file and JWT claims: `role` or `role:experiment`.

`writer` is the writer role on every experiment; `writer:12` on experiment 12 only.
"""

from __future__ import annotations

from collections.abc import Iterable

from artifactd.errors import InvalidArgument
from artifactd.server.identity import Grant, Role

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
    return Grant(role, experiment if sep else None)


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
