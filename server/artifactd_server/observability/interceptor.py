"""The outermost server interceptor: every call of every kind counted, timed and logged.

Request iterators and response generators are wrapped, so the bytes of every message
(`ByteSize()`, one integer addition each: no lock, no log line per message) and the final status
are seen however the call ends: a return, `context.abort`, an exception, a cancelled client or an
expired deadline. Inner interceptors (authentication) run inside it and note the principal
(`identity.taking_notes`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from artifactd_server.api.handlers import Behavior, Kind, kind_of, rewrapped
from artifactd_server.api.requests import REQUEST_ID_KEY, request_id, request_path
from artifactd_server.observability.calls import Call, MethodMetrics, gone, outcome
from artifactd_server.observability.metrics import Metrics

Begin = Callable[[grpc.ServicerContext], Call]

_KINDS = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}


class ObservingInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._methods: dict[str, MethodMetrics] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        full_method: str = handler_call_details.method
        method = self._methods.get(full_method)
        if method is None:
            method = MethodMetrics.of(self._metrics, full_method, _KINDS[kind_of(handler)])
            self._methods[full_method] = method
        method.started.inc()
        rid = request_id(handler_call_details.invocation_metadata)

        def begin(context: grpc.ServicerContext) -> Call:
            call = Call(method, full_method, rid, context)
            # Runs when the call terminates; ends it only if the handler has not (the client
            # cancelled, the deadline passed).
            context.add_callback(lambda: call.finish(gone(context)))
            with contextlib.suppress(ValueError):  # ValueError: already sent
                context.send_initial_metadata(((REQUEST_ID_KEY, rid),))
            return call

        return rewrapped(handler, lambda kind, behavior: _WRAPPERS[kind](behavior, begin))


def _end(call: Call, error: BaseException | None) -> None:
    """In the handler's thread: the request id in the trailers, then the accounting."""
    context = call.context
    try:
        trailers = (*(context.trailing_metadata() or ()), (REQUEST_ID_KEY, call.request_id))
        context.set_trailing_metadata(trailers)
    except Exception:  # noqa: S110 - the trailers are a courtesy; the accounting must happen
        pass
    call.finish(outcome(context, error))


def _call(call: Call, behavior: Behavior, argument: Any) -> Any:
    """Runs the inner handler as the current call; an exception ends the call."""
    with call.taking_notes():
        try:
            return behavior(argument, call.context)
        except BaseException as exc:
            _end(call, exc)
            raise


def _unary_unary(behavior: Behavior, begin: Begin) -> Behavior:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        call = begin(context)
        call.path = request_path(request)
        call.bytes_in = request.ByteSize()
        response = _call(call, behavior, request)
        if response is not None:
            call.bytes_out = response.ByteSize()
        _end(call, None)
        return response

    return handle


def _unary_stream(behavior: Behavior, begin: Begin) -> Behavior:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = begin(context)
        call.path = request_path(request)
        call.bytes_in = request.ByteSize()
        return _responses(call, _call(call, behavior, request))

    return handle


def _stream_unary(behavior: Behavior, begin: Begin) -> Behavior:
    def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = begin(context)
        response = _call(call, behavior, _requests(call, requests))
        if response is not None:
            call.bytes_out = response.ByteSize()
        _end(call, None)
        return response

    return handle


def _stream_stream(behavior: Behavior, begin: Begin) -> Behavior:
    def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        call = begin(context)
        return _responses(call, _call(call, behavior, _requests(call, requests)))

    return handle


_WRAPPERS: dict[Kind, Callable[[Behavior, Begin], Behavior]] = {
    (False, False): _unary_unary,
    (False, True): _unary_stream,
    (True, False): _stream_unary,
    (True, True): _stream_stream,
}


def _requests(call: Call, requests: Iterator[Any]) -> Iterator[Any]:
    """The request stream, counted; the first message gives the path (its header's, on uploads)."""
    for message in requests:
        call.path = request_path(message)
        call.bytes_in += message.ByteSize()
        yield message
        break
    for message in requests:
        call.bytes_in += message.ByteSize()
        yield message


def _responses(call: Call, responses: Iterator[Any]) -> Iterator[Any]:
    """The response stream, counted; the call ends when it is exhausted, fails or is dropped."""
    iterator = iter(responses)
    try:
        while True:
            try:
                if call.principal:
                    message = next(iterator)
                else:  # a generator's first step may be where the auth layer runs
                    with call.taking_notes():
                        message = next(iterator)
            except StopIteration:
                break
            call.bytes_out += message.ByteSize()
            yield message
    except GeneratorExit:  # gRPC dropped the stream: the client went away or the deadline passed
        call.finish(gone(call.context))
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        raise
    except BaseException as exc:
        _end(call, exc)
        raise
    _end(call, None)
