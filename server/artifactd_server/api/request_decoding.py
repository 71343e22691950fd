"""How request bytes become request messages: upload chunks without copying their data, and
bytes that are not a valid request answered INVALID_ARGUMENT, not INTERNAL.

The two upload RPCs get `wire.ChunkDecoder`s, so the servicer (and the interceptors
around it) receive `Chunk`s whose `data` is a view of the buffer gRPC delivered (measured on a
1 GiB upload: see the README's Benchmarks).

Left to itself, gRPC's Python server answers a request it cannot deserialize (invalid UTF-8 in a
string field, garbage bytes) with INTERNAL and logs "Exception deserializing request!" with a
traceback, per call: a client's mistake reported as a server bug, and a log any client can fill.
This interceptor sits right inside the observing one, so every call is still counted; the
deserializer it sets is the one gRPC uses (the outer handler inherits it). It wraps each
method's request deserializer (the chunk decoder for uploads) so that a failure yields an
`Undecodable` value instead of an exception, and refuses the call when one arrives: a unary
call before any handler (authentication included) sees it, a request stream when the handler
reaches that message, so an upload in progress is aborted by the handler's own clean-up. Each
refusal is one warning line, no traceback, and a count in `artifactd_undecodable_requests_total`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from prometheus_client import Counter

from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.wire import Chunk, ChunkDecoder
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd_server.api import error_details
from artifactd_server.api.handlers import Behavior, Handler, Kind, rewrapped
from artifactd_server.api.requests import is_repeated

log = logging.getLogger(__name__)

_SERVICE = pb.DESCRIPTOR.services_by_name["ArtifactService"]
CHUNK_DECODERS: dict[str, ChunkDecoder[Any]] = {
    f"/{_SERVICE.full_name}/LogArtifact": ChunkDecoder(pb.LogArtifactRequest),
    f"/{_SERVICE.full_name}/LogArtifacts": ChunkDecoder(pb.LogArtifactsRequest),
}

OWN_SERVICES_PREFIX = "/artifactd."
"""Methods whose handlers turn an `InvalidArgument` into its status (`status.translate_errors`);
others (health, reflection) are refused through their context instead."""


class Undecodable:
    """What a request deserializer returned for bytes that are not a valid request: not a
    message of the method's type, or one with an enum value the API does not define."""

    __slots__ = ("field", "reason", "size")

    def __init__(self, size: int, reason: str, field: str | None = None) -> None:
        self.size = size
        self.reason = reason
        self.field = field

    def ByteSize(self) -> int:  # noqa: N802 - protobuf's name, read by the observing interceptor
        return self.size


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """`deserializer`, returning `Undecodable` where it would raise or where the message holds
    an undefined enum value (proto3 keeps unknown numbers; no handler should have to)."""

    def decode(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            request = deserializer(data)
        except Exception as exc:  # DecodeError, UnicodeDecodeError, ...: all the client's bytes
            return Undecodable(len(data), f"not decodable: {str(exc) or type(exc).__name__}")
        message = request.message if isinstance(request, Chunk) else request
        if isinstance(message, Message):
            undefined = undefined_enum(message)
            if undefined is not None:
                field, value = undefined
                return Undecodable(len(data), f"{field} has the undefined value {value}", field)
        return request

    return decode


def undefined_enum(message: Message, prefix: str = "") -> tuple[str, int] | None:
    """The first enum field (dotted name, value) holding a number its enum does not define."""
    for name, kind, defined in _plan(message.DESCRIPTOR):
        value = getattr(message, name)
        if kind == "message":
            inner = (value,) if message.HasField(name) else ()
        elif kind == "messages":
            inner = value
        elif kind == "message_map":
            inner = value.values()
        else:  # an enum, repeated enums or a map of enums: their numbers, checked here
            numbers = (
                (value,) if kind == "enum" else value.values() if kind == "enum_map" else value
            )
            for number in numbers:
                if number not in defined:
                    return f"{prefix}{name}", number
            continue
        for item in inner:
            found = undefined_enum(item, f"{prefix}{name}.")
            if found is not None:
                return found
    return None


_Step = tuple[str, str, Any]
"""A field's name, how to read it, and for enum kinds the numbers its enum defines."""
_PLANS: dict[Any, tuple[_Step, ...]] = {}


def _plan(descriptor: Any) -> tuple[_Step, ...]:
    """The fields of a message type that can hold an enum, each with how to read it (cached).

    Checked on every request message, each packed file of a directory upload included: going
    through only these fields, not `ListFields` and the whole tree, cost a tenth as much.
    """
    plan = _PLANS.get(descriptor)
    if plan is not None:
        return plan
    steps: list[_Step] = []
    for field in descriptor.fields:
        repeated = is_repeated(field)
        if field.type == FieldDescriptor.TYPE_ENUM:
            kind = "enums" if repeated else "enum"
            steps.append((field.name, kind, field.enum_type.values_by_number))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            inner = field.message_type
            if inner.GetOptions().map_entry:
                value = inner.fields_by_name["value"]
                if value.type == FieldDescriptor.TYPE_ENUM:
                    steps.append((field.name, "enum_map", value.enum_type.values_by_number))
                elif value.message_type is not None and _has_enums(value.message_type):
                    steps.append((field.name, "message_map", None))
            elif _has_enums(inner):
                steps.append((field.name, "messages" if repeated else "message", None))
    _PLANS[descriptor] = plan = tuple(steps)
    return plan


_ENUMS: dict[Any, bool] = {}


def _has_enums(descriptor: Any, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message type can hold an enum anywhere inside (cached: most cannot)."""
    known = _ENUMS.get(descriptor)
    if known is not None:
        return known
    found = False
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_ENUM:
            found = True
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            inner = field.message_type
            if inner.full_name not in seen:  # recursive types
                found = _has_enums(inner, seen | {descriptor.full_name})
        if found:
            break
    if not seen:
        _ENUMS[descriptor] = found
    return found


def refusal(method: str, request: Undecodable) -> InvalidArgument:
    name = method.rpartition("/")[2]
    if request.field is not None:
        return InvalidArgument(
            f"{request.reason} in the {name} request; use one of the values the API defines",
            field=request.field,
        )
    return InvalidArgument(
        f"the request could not be decoded as a {name} message ({request.size} bytes, "
        f"{request.reason}); string fields must be valid UTF-8 and the bytes a serialized "
        "protobuf message of the method's request type"
    )


class RequestDecodingInterceptor(grpc.ServerInterceptor):
    def __init__(self, undecodable: Counter) -> None:
        self._undecodable = undecodable

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        service, _, name = method.lstrip("/").rpartition("/")
        counter = self._undecodable.labels(service, name)

        def refuse(request: Undecodable, context: grpc.ServicerContext) -> InvalidArgument:
            counter.inc()
            log.warning(
                "%s: refused an undecodable request (%d bytes) from %s: %s",
                method, request.size, context.peer(), request.reason,
            )  # fmt: skip
            return refusal(method, request)

        def abort(request: Undecodable, context: grpc.ServicerContext) -> Any:
            error = refuse(request, context)
            error_details.abort_with(context, error, {"method": name})

        def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            for request in requests:
                if isinstance(request, Undecodable):
                    if method.startswith(OWN_SERVICES_PREFIX):
                        raise refuse(request, context)  # the handler's clean-up, then its status
                    abort(request, context)
                yield request

        def wrap(kind: Kind, behavior: Behavior) -> Behavior:
            streaming_requests, _ = kind
            if streaming_requests:
                return lambda requests, context: behavior(checked(requests, context), context)

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    abort(request, context)
                return behavior(request, context)

            return unary

        decoder = CHUNK_DECODERS.get(method) or handler.request_deserializer
        return rewrapped(handler, wrap, tolerant(decoder))
