"""Rebuilding a gRPC method handler around a wrapped behaviour, for the server interceptors.

A handler carries one of four behaviours (unary or streaming requests x responses); an
interceptor that wraps the behaviour must hand back a handler of the same kind with the same
(de)serializers. This is that bookkeeping, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

Behavior: TypeAlias = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Kind: TypeAlias = tuple[bool, bool]
"""(request streaming, response streaming)."""


def kind_of(handler: Handler) -> Kind:
    return bool(handler.request_streaming), bool(handler.response_streaming)


def rewrapped(
    handler: Handler,
    wrap: Callable[[Kind, Behavior], Behavior],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """A handler of the same kind whose behaviour is `wrap(kind, behaviour)` (and whose requests
    `request_deserializer` decodes, if given)."""
    kind = kind_of(handler)
    behavior, build = {
        (False, False): (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (False, True): (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (True, False): (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (True, True): (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    }[kind]
    assert behavior is not None
    return build(
        wrap(kind, behavior),
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
