"""Applies authentication and the policy to every call, before any servicer code runs.

Unary requests are checked whole. Upload streams are checked on every message that carries a
header, as the servicer reads it: a LogArtifacts stream may name several runs, and the first
file a caller may not write ends the stream with PERMISSION_DENIED (the files before it are
stored). A header that is malformed (a bad path or run id) goes on to the servicer, which
refuses that file alone before writing anything, for every caller alike. A method with no rule
is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from artifactd.protocol.errors import (
    ArtifactError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    excerpt,
)
from artifactd.protocol.grants import Grant, Role, format_grant
from artifactd.protocol.ids import check_run_id
from artifactd_server.api.error_details import abort_with
from artifactd_server.api.handlers import Behavior, Handler, rewrapped
from artifactd_server.api.requests import request_path
from artifactd_server.auth.authenticator import Authenticator
from artifactd_server.auth.concurrency import PrincipalSlots
from artifactd_server.auth.resources import Resources, experiment_key
from artifactd_server.domain.identity import LOCAL, Principal, acting_as
from artifactd_server.domain.policy import RULES, On, Rule, allows
from artifactd_server.store.upload_sessions import check_upload_id

log = logging.getLogger(__name__)


class Decider:
    """Whether a principal may make one request under its method's rule.

    The order of the checks is what keeps refusals from telling what exists:
    1. syntax (an experiment id that is not a number, a malformed run id, an empty upload id):
       INVALID_ARGUMENT for every caller, before any lookup;
    2. a caller with the role globally goes on to the servicer, which answers NOT_FOUND for
       what is missing;
    3. anyone else is refused with one PERMISSION_DENIED message per kind of address ("run X
       does not exist or ... may not do this on it"), the same whether the thing is missing or
       another experiment's; only a caller who may read every experiment learns NOT_FOUND.
       A plain path's refusal quotes the path, never the experiment it resolved to.
    An upload id is owner-bound: a lookup that finds no session of the caller's hands the call
    to the servicer, which answers NOT_FOUND (AbortMultipartUpload: existed=false) for every
    caller alike, having nothing of the caller's to act on.
    """

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
        if rule.on in (On.NOTHING, On.ANY) or role is None:
            return
        target = _target(rule.on, request)
        _check_syntax(rule.on, target)
        if allows(principal, role, None):
            return  # a global grant covers every experiment: nothing to look up
        if rule.on is On.EXPERIMENTS:
            for experiment_id in getattr(request, "experiment_ids", []):
                if not allows(principal, role, experiment_key(experiment_id)):
                    raise _refusal(principal, role, f"experiment {experiment_id}")
            return
        if rule.on is On.EVERYTHING:
            needed = format_grant(Grant(role))
            raise PermissionDenied(
                f"{_who(principal)} may not do this: it needs the '{needed}' role on the whole "
                f"server; roles held: {_held(principal)}"
            )
        try:
            experiment_id = self._experiment(rule.on, principal, target, runs)
        except NotFound:
            if _upload_id(rule.on, target):
                return  # no session of the caller's: the servicer answers, as for anyone
            if allows(principal, Role.READER, None):
                raise  # who may read everything may learn what is missing
            raise _refusal(principal, role, _addressed(rule.on, target)) from None
        if not allows(principal, role, experiment_id):
            raise _refusal(principal, role, _addressed(rule.on, target))

    def _experiment(
        self, on: On, principal: Principal, target: Any, runs: dict[str, str] | None
    ) -> str | None:
        resources = self._resources
        upload_id = _upload_id(on, target)
        if upload_id:
            return resources.of_upload(upload_id, principal.name)
        if on is On.TARGET:
            if target.run_id and runs is not None:
                if target.run_id not in runs:
                    runs[target.run_id] = resources.of_run(target.run_id)
                return runs[target.run_id]
            return resources.of_target(target.run_id, target.path)
        if on is On.RUN:
            return resources.of_run(target.run_id)
        return resources.of_experiment(target)


def _target(on: On, request: Message) -> Any:
    """The message that addresses the resource: an upload's header, else the request."""
    if on is On.TARGET and _has_header(request):
        return getattr(request, "header")  # noqa: B009
    return request


def _upload_id(on: On, target: Any) -> str:
    return str(getattr(target, "upload_id", "")) if on in (On.UPLOAD, On.TARGET) else ""


def _check_syntax(on: On, target: Any) -> None:
    """What needs no lookup, checked for every caller before authorization: a malformed
    request is INVALID_ARGUMENT whoever sends it, and tells nothing about what exists."""
    if on is On.UPLOAD:
        check_upload_id(target.upload_id)
    elif on is On.RUN or (on is On.TARGET and target.run_id and not _upload_id(on, target)):
        check_run_id(target.run_id)
    elif on is On.EXPERIMENT:
        named = bool(getattr(target, "name", ""))  # GetExperiment: an id or a name, not both
        if "name" in target.DESCRIPTOR.fields_by_name and named == bool(target.experiment_id):
            raise InvalidArgument("give exactly one of experiment_id and name")
        if target.experiment_id:
            experiment_key(target.experiment_id)
    elif on is On.EXPERIMENTS:
        for experiment_id in target.experiment_ids:
            experiment_key(experiment_id)


def _addressed(on: On, target: Any) -> str:
    """How the request named what it touches, for a refusal that quotes only that."""
    if _upload_id(on, target):
        return f"upload {excerpt(_upload_id(on, target))}"
    if on in (On.RUN, On.TARGET) and target.run_id:
        return f"run {excerpt(target.run_id)}"
    if on is On.TARGET:
        return f"'{excerpt(target.path)}'"
    if target.experiment_id:
        return f"experiment {excerpt(target.experiment_id)}"
    return f"experiment named '{excerpt(target.name)}'"


def _refusal(principal: Principal, role: Role, addressed: str) -> PermissionDenied:
    """The one answer for "missing, or not yours": it names what the request named, the role
    needed and the roles held, never which experiment (if any) the thing belongs to."""
    return PermissionDenied(
        f"{addressed} does not exist or {_who(principal)} may not do this there: it needs the "
        f"'{role.name.lower()}' role (or higher) on its experiment, or globally; roles held: "
        f"{_held(principal)}"
    )


def _who(principal: Principal) -> str:
    return principal.name or "this caller"


def _held(principal: Principal) -> str:
    return ", ".join(sorted(format_grant(g) for g in principal.grants)) or "none"


def _has_header(message: Message) -> bool:
    return "header" in message.DESCRIPTOR.fields_by_name and message.HasField("header")


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(
        self, authenticator: Authenticator, decider: Decider, slots: PrincipalSlots | None = None
    ) -> None:
        self._authenticator = authenticator
        self._decider = decider
        self._slots = slots if authenticator.enabled else None  # per principal: auth on only

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
        call = _Call(self._authenticator, self._decider, method, rule, self._slots)
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
        self,
        authenticator: Authenticator,
        decider: Decider,
        method: str,
        rule: Rule | None,
        slots: PrincipalSlots | None,
    ) -> None:
        self._authenticator = authenticator
        self._decider = decider
        self._method = method
        self._rule = rule
        self._slots = slots

    def _slot(self, principal: Principal, context: grpc.ServicerContext) -> Callable[[], None]:
        """Takes one of the principal's call slots; the returned release runs when the call
        terminates (cancelled too: gRPC's callback) and again harmlessly in the wrapper."""
        if self._slots is None:
            return _nothing
        try:
            release = self._slots.acquire(principal.name)
        except ArtifactError as exc:
            log.warning("%s refused for %r: %s", self._method, principal.name, exc.message)
            self._abort(context, exc)
        context.add_callback(release)
        return release

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
                except InvalidArgument:
                    pass  # malformed: the servicer refuses this file alone, as for any caller
                except ArtifactError as exc:
                    log.info("%s refused for %r: %s", self._method, principal.name, exc.message)
                    raise
            yield message

    def unary(self, behavior: Behavior) -> Behavior:
        def run(request: Message, context: grpc.ServicerContext) -> Any:
            principal = self._principal(context)
            release = self._slot(principal, context)
            try:
                with acting_as(principal):
                    self._check(principal, request, context)
                    return behavior(request, context)
            finally:
                release()

        return run

    def unary_stream(self, behavior: Behavior) -> Behavior:
        def run(request: Message, context: grpc.ServicerContext) -> Iterator[Any]:
            principal = self._principal(context)
            release = self._slot(principal, context)
            try:
                with acting_as(principal):
                    self._check(principal, request, context)
                    responses = behavior(request, context)
                yield from _as(principal, responses)
            finally:
                release()

        return run

    def stream_unary(self, behavior: Behavior) -> Behavior:
        def run(requests: Iterator[Message], context: grpc.ServicerContext) -> Any:
            principal = self._principal(context)
            release = self._slot(principal, context)
            try:
                with acting_as(principal):
                    return behavior(self._checked_stream(principal, requests), context)
            finally:
                release()

        return run

    def stream_stream(self, behavior: Behavior) -> Behavior:
        def run(requests: Iterator[Message], context: grpc.ServicerContext) -> Iterator[Any]:
            principal = self._principal(context)
            release = self._slot(principal, context)
            try:
                with acting_as(principal):
                    responses = behavior(self._checked_stream(principal, requests), context)
                yield from _as(principal, responses)
            finally:
                release()

        return run


def _nothing() -> None:
    pass


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
