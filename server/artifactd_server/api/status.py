"""Turns domain errors into gRPC statuses, in one place for every RPC.

Adapters and helpers raise `protocol.errors` exceptions; the `translate_errors` decorator on
each servicer method aborts the call with the matching canonical code and the error's message,
and `google.rpc` error details (`error_details`) in the trailers.
Anything else is a bug: it is logged with a reference the client's message repeats, and the
client sees INTERNAL without internals.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar, cast

import grpc

from artifactd.protocol.errors import ArtifactError
from artifactd_server.api import error_details
from artifactd_server.api.requests import request_path
from artifactd_server.store.database import outage_reason

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class InFlight:
    """Counts running artifact calls, so a drain can end as soon as the last transfer is done.

    Long-lived calls that are not transfers (a load balancer's health Watch stream) would
    otherwise hold every shutdown for the whole grace period.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self) -> None:
        with self._idle:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._idle:
            self._count -= 1
            if self._count == 0:
                self._idle.notify_all()

    def track(self, context: grpc.ServicerContext) -> None:
        """Counts the call until gRPC reports it terminated: after its last message and status
        went out, not when its handler returned. A drain that cut calls as soon as their
        handlers returned cancelled responses still being sent (UNAVAILABLE "Cancelling all
        calls" under load)."""
        self.__enter__()
        if not context.add_callback(self.__exit__):  # already over: nothing left to send
            self.__exit__()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)


def _abort(
    context: grpc.ServicerContext, exc: BaseException, method: str, request: object = None
) -> NoReturn:
    metadata = {"method": method, "path": request_path(request)}
    if isinstance(exc, ArtifactError):
        log.info("%s failed: %s %s", method, exc.code.name, exc.message)
        error_details.abort_with(context, exc, metadata)
    reason = outage_reason(exc)
    if reason is not None:  # the database went away, refused the connection or hangs
        log.warning("%s: backend store unavailable: %s", method, getattr(exc, "orig", None) or exc)
        error_details.abort(
            context,
            error_details.rich_status(
                grpc.StatusCode.UNAVAILABLE,
                f"the backend store (the database of experiments and runs) is unavailable: "
                f"{reason}. Retry later; artifactd keeps running and reconnects when the "
                "database is back",
                error_details.BACKEND_STORE_UNAVAILABLE,
                metadata,
                retry_delay=error_details.BACKEND_STORE_RETRY_DELAY,
            ),
        )
    ref = uuid.uuid4().hex[:12]
    log.exception("%s crashed (ref %s)", method, ref)
    error_details.abort(
        context,
        error_details.rich_status(
            grpc.StatusCode.INTERNAL,
            f"internal server error (ref {ref}); see the server log",
            error_details.INTERNAL,
            {**metadata, "ref": ref},
        ),
    )


def translate_errors(method: F) -> F:
    """Maps exceptions raised by a unary or streaming servicer method onto gRPC statuses.

    The call counts as in flight (`self.in_flight`) until it terminated (`InFlight.track`).
    """
    name = method.__name__

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self.in_flight.track(context)
            try:
                yield from method(self, request, context)
            except grpc.RpcError:
                log.info("%s: the client went away", name)  # cancelled or deadline passed
            except Exception as exc:
                _abort(context, exc, name, request)

        return cast(F, stream_wrapper)

    @functools.wraps(method)
    def unary_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        self.in_flight.track(context)
        try:
            return method(self, request, context)
        except grpc.RpcError:
            log.info("%s: the client went away", name)
            return None
        except Exception as exc:
            _abort(context, exc, name, request)

    return cast(F, unary_wrapper)
