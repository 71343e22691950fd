"""`--max-path-length` for requests that carry one path, before authorization looks at it.

A path longer than this server takes is a malformed request, INVALID_ARGUMENT for every caller
whatever it may touch, so it is refused before the policy resolves the path to an experiment.
Upload streams are checked file by file by the servicer instead (a LogArtifacts stream fails
that file only). With the protocol's own limit (the default) nothing is added: `paths.parse`
enforces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from artifactd.protocol.errors import ArtifactError
from artifactd.protocol.paths import MAX_PATH_BYTES
from artifactd_server.api.error_details import abort_with
from artifactd_server.api.handlers import Behavior, Handler, rewrapped
from artifactd_server.api.requests import request_path
from artifactd_server.domain.limits import check_path_length


class PathLengthInterceptor(grpc.ServerInterceptor):
    def __init__(self, limit: int) -> None:
        self._limit = limit

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(details)
        if handler is None or handler.request_streaming or self._limit >= MAX_PATH_BYTES:
            return handler
        method = str(details.method).rsplit("/", 1)[-1]
        return rewrapped(handler, lambda kind, behavior: self._checked(method, behavior))

    def _checked(self, method: str, behavior: Behavior) -> Behavior:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            path = request_path(request)
            try:
                check_path_length(path, self._limit)
            except ArtifactError as exc:
                abort_with(context, exc, {"method": method, "path": path[: self._limit]})
            return behavior(request, context)

        return run
