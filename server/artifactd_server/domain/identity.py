"""Who is calling: the principal authentication established for the current RPC.

The auth interceptor sets it for the duration of one call (in the thread that runs the handler,
streaming generators included), so the servicers, the authorization check and the access log
read the same answer without threading it through every signature.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from artifactd.protocol.grants import Grant, Role


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a name, how it proved it, and what it was granted."""

    name: str
    grants: frozenset[Grant] = field(default_factory=frozenset)
    method: str = "anonymous"

    def role_on(self, experiment_id: str | None) -> Role | None:
        """The highest role this principal holds on `experiment_id` (None: globally only)."""
        roles = [
            grant.role
            for grant in self.grants
            if grant.experiment_id is None or grant.experiment_id == experiment_id
        ]
        return max(roles, default=None)


ANONYMOUS = Principal("")
"""Nobody: the principal outside any call, with no grants at all."""

LOCAL = Principal("", frozenset({Grant(Role.ADMIN)}), "none")
"""The caller when authentication is off: every RPC is allowed, as on one machine."""

_CURRENT: ContextVar[Principal] = ContextVar("artifactd_principal", default=ANONYMOUS)


def current() -> Principal:
    return _CURRENT.get()


class CallNotes:
    """Filled in during one call for an outer layer (the access log) that runs before auth."""

    principal: Principal | None = None


_NOTES: ContextVar[CallNotes | None] = ContextVar("artifactd_call_notes", default=None)


@contextmanager
def taking_notes(notes: CallNotes) -> Iterator[CallNotes]:
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    notes = _NOTES.get()
    if notes is not None:
        notes.principal = principal
    token = _CURRENT.set(principal)
    try:
        yield
    finally:
        _CURRENT.reset(token)
