"""Applies authentication and the policy to every call, before any servicer code runs.

Unary requests are checked whole. Upload streams are checked on every message that carries a
header, as the servicer reads it: a LogArtifacts stream may name several runs, and the first
file a caller may not write ends the stream with PERMISSION_DENIED (the files before it are
stored). A method with no rule is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from artifactd.protocol.errors import ArtifactError, NotFound, PermissionDenied
from artifactd.protocol.grants import Grant, Role, format_grant
from artifactd_server.api.error_details import abort_with
from artifactd_server.api.handlers import Behavior, Handler, rewrapped
from artifactd_server.api.requests import request_path
from artifactd_server.auth.authenticator import Authenticator
from artifactd_server.auth.resources import Resources
from artifactd_server.domain.identity import LOCAL, Principal, acting_as
from artifactd_server.domain.policy import RULES, On, Rule, allows

log = logging.getLogger(__name__)


class Decider:
    """Whether a principal may make one request under its method's rule."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    def check(
        self,
        rule: Rule,
        principal: Principal,
        request: Message,
        runs: dict[str, str] | None = None,
    ) -> None:
        """Raises unless allowed. `runs` remembers run -> experiment across the headers of one
        upload stream (a run never changes experiment), so a batch looks each run up once."""
        role = rule.role
        if rule.on in (On.NOTHING, On.ANY) or role is None or allows(principal, role, None):
            return  # a global grant covers every experiment: nothing to look up
        if rule.on is On.EXPERIMENTS:
            for experiment_id in getattr(request, "experiment_ids", []):
                self._require(principal, role, experiment_id)
            return
        if rule.on is On.EVERYTHING:
            self._require(principal, role, None)
            return
        try:
            experiment_id = self._experiment(rule.on, principal, request, runs)
        except NotFound as exc:
            if rule.on is On.UPLOAD:
                raise  # owner-bound already: another caller's id is NOT_FOUND for everyone
            raise PermissionDenied(
                f"{exc.message}, or you ({principal.name}) have no role on its experiment"
            ) from None
        self._require(principal, role, experiment_id)

    def _experiment(
        self, on: On, principal: Principal, request: Message, runs: dict[str, str] | None
    ) -> str | None:
        resources = self._resources
        if on is On.TARGET:
            target: Any = getattr(request, "header") if _has_header(request) else request  # noqa: B009
            if getattr(target, "upload_id", ""):
                return resources.of_upload(target.upload_id, principal.name)
            if target.run_id and runs is not None:
                if target.run_id not in runs:
                    runs[target.run_id] = resources.of_run(target.run_id)
                return runs[target.run_id]
            return resources.of_target(target.run_id, target.path)
        if on is On.UPLOAD:
            return resources.of_upload(getattr(request, "upload_id"), principal.name)  # noqa: B009
        if on is On.RUN:
            return resources.of_run(getattr(request, "run_id"))  # noqa: B009
        return resources.of_experiment(request)

    @staticmethod
    def _require(principal: Principal, role: Role, experiment_id: str | None) -> None:
        if allows(principal, role, experiment_id):
            return
        needed = format_grant(Grant(role, experiment_id))
        where = f"experiment {experiment_id}" if experiment_id else "the whole server"
        held = ", ".join(sorted(format_grant(g) for g in principal.grants)) or "none"
        raise PermissionDenied(
            f"{principal.name or 'this caller'} may not do this on {where}: it needs the "
            f"'{needed}' role (or higher); roles held: {held}"
        )


def _has_header(message: Message) -> bool:
    return "header" in message.DESCRIPTOR.fields_by_name and message.HasField("header")


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, decider: Decider) -> None:
        self._authenticator = authenticator
        self._decider = decider

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        rule = RULES.get(method)
        if rule is not None and rule.on is On.NOTHING:
            return handler
        call = _Call(self._authenticator, self._decider, method, rule)
        wrappers = {
            (False, False): call.unary,
            (False, True): call.unary_stream,
            (True, False): call.stream_unary,
            (True, True): call.stream_stream,
        }
        return rewrapped(handler, lambda kind, behavior: wrappers[kind](behavior))


class _Call:
    """The wrappers for one method: authenticate, check, then run the servicer as the caller."""

    def __init__(
        self, authenticator: Authenticator, decider: Decider, method: str, rule: Rule | None
    ) -> None:
        self._authenticator = authenticator
        self._decider = decider
        self._method = method
        self._rule = rule

    def _principal(self, context: grpc.ServicerContext) -> Principal:
        if self._rule is None:
            log.error("%s has no authorization rule: refused", self._method)
            self._abort(
                context,
                PermissionDenied(
                    f"{self._method} has no authorization rule on this server; it is refused"
                ),
            )
        if not self._authenticator.enabled:
            return LOCAL
        try:
            return self._authenticator.authenticate(
                context.invocation_metadata(), context.auth_context()
            )
        except ArtifactError as exc:
            self._abort(context, exc)

    def _check(self, principal: Principal, request: Message, context: grpc.ServicerContext) -> None:
        assert self._rule is not None
        try:
            self._decider.check(self._rule, principal, request)
        except ArtifactError as exc:
            log.info("%s refused for %r: %s", self._method, principal.name, exc.message)
            self._abort(context, exc, request)

    def _abort(
        self, context: grpc.ServicerContext, exc: ArtifactError, request: object = None
    ) -> NoReturn:
        metadata = {"method": self._method.rsplit("/", 1)[-1], "path": request_path(request)}
        abort_with(context, exc, metadata)

    def _checked_stream(
        self, principal: Principal, requests: Iterator[Message]
    ) -> Iterator[Message]:
        assert self._rule is not None
        rule = self._rule
        runs: dict[str, str] = {}
        for message in requests:
            if _has_header(message):
                try:
                    self._decider.check(rule, principal, message, runs)
                except ArtifactError as exc:
                    log.info("%s refused for %r: %s", self._method, principal.name, exc.message)
                    raise
            yield message

    def unary(self, behavior: Behavior) -> Behavior:
        def run(request: Message, context: grpc.ServicerContext) -> Any:
            principal = self._principal(context)
            with acting_as(principal):
                self._check(principal, request, context)
                return behavior(request, context)

        return run

    def unary_stream(self, behavior: Behavior) -> Behavior:
        def run(request: Message, context: grpc.ServicerContext) -> Iterator[Any]:
            principal = self._principal(context)
            with acting_as(principal):
                self._check(principal, request, context)
                responses = behavior(request, context)
            yield from _as(principal, responses)

        return run

    def stream_unary(self, behavior: Behavior) -> Behavior:
        def run(requests: Iterator[Message], context: grpc.ServicerContext) -> Any:
            principal = self._principal(context)
            with acting_as(principal):
                return behavior(self._checked_stream(principal, requests), context)

        return run

    def stream_stream(self, behavior: Behavior) -> Behavior:
        def run(requests: Iterator[Message], context: grpc.ServicerContext) -> Iterator[Any]:
            principal = self._principal(context)
            with acting_as(principal):
                responses = behavior(self._checked_stream(principal, requests), context)
            yield from _as(principal, responses)

        return run


def _as(principal: Principal, responses: Iterator[Any]) -> Iterator[Any]:
    """Runs each step of a response generator as `principal` (it runs between our yields)."""
    iterator = iter(responses)
    try:
        while True:
            with acting_as(principal):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:  # a cancelled call: the servicer's cleanup runs now, as the caller
            with acting_as(principal):
                close()
