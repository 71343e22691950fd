"""Turns domain errors into gRPC statuses, in one place for every RPC.

Adapters and helpers raise `artifactd.errors` exceptions; the `translate_errors` decorator on
each servicer method aborts the call with the matching canonical code and the error's message.
Anything else is a bug: it is logged with a reference the client's message repeats, and the
client sees INTERNAL without internals.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import grpc

from artifactd.errors import ArtifactError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, ArtifactError):
        log.info("%s failed: %s %s", method, exc.code.name, exc.message)
        context.abort(exc.code, exc.message)
    ref = uuid.uuid4().hex[:12]
    log.exception("%s crashed (ref %s)", method, ref)
    context.abort(
        grpc.StatusCode.INTERNAL, f"internal server error (ref {ref}); see the server log"
    )


def translate_errors(method: F) -> F:
    """Maps exceptions raised by a unary or streaming servicer method onto gRPC statuses."""
    name = method.__name__

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except grpc.RpcError:
                log.info("%s: the client went away", name)  # cancelled or deadline passed
            except Exception as exc:
                _abort(context, exc, name)

        return cast(F, stream_wrapper)

    @functools.wraps(method)
    def unary_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except grpc.RpcError:
            log.info("%s: the client went away", name)
            return None
        except Exception as exc:
            _abort(context, exc, name)
            return None  # unreachable: abort raises

    return cast(F, unary_wrapper)
