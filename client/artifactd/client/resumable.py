"""Resumable uploads through the server, for storage that cannot take direct uploads.

The client declares the file's size when it starts the session, then streams it with LogArtifact;
the finish message carries the sha256 of the whole file (on a resumed stream the client hashes
the part the server already holds from its own copy), which the server checks against all the
bytes it holds before publishing. When the stream breaks (the server restarts, the network
drops), the client asks how many bytes are held (QueryWriteStatus) and sends only the rest, up to
`ARTIFACTD_MAX_RETRIES` times; a client killed midway continues on its next run (the session id
is kept like a direct upload's, in `ARTIFACTD_STATE_DIR`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from artifactd.client.direct import UploadRecord
from artifactd.client.rpc import backoff, call, error, retryable
from artifactd.client.stubs import ArtifactStub
from artifactd.protocol.errors import ArtifactError, NotFound, Unavailable
from artifactd.protocol.wire import OutgoingChunk
from artifactd.v1 import artifact_service_pb2 as pb

Messages = Callable[[pb.UploadHeader, int], Iterator[OutgoingChunk[pb.LogArtifactRequest]]]
"""(header, offset) -> the stream of one file from `offset`; its finish carries the checksum
(sha256 or CRC32C) of the whole file, which the server checks against everything it holds."""


class ResumableUpload:
    def __init__(
        self,
        stub: ArtifactStub,
        record: UploadRecord,
        *,
        rpc_timeout: float | None,
        transfer_timeout: float | None,
        retries: int,
        rewind: Callable[[int], object],
    ) -> None:
        self._stub = stub
        self._record = record
        self._rpc_timeout = rpc_timeout
        self._transfer_timeout = transfer_timeout
        self._retries = retries
        self._rewind = rewind  # the progress bar, moved back to what the server holds

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        return call(method, request, self._rpc_timeout)

    def run(
        self,
        local: str,
        path: str,
        run_id: str,
        overwrite: pb.OverwritePolicy.ValueType,
        messages: Messages,
    ) -> pb.FileInfo | None:
        """Uploads `local`; None when the server's storage takes direct uploads instead."""
        upload_id = self._record.load()
        offset = 0
        if upload_id is not None:
            try:
                offset = self._held(upload_id)
            except NotFound:
                self._record.forget()
                upload_id = None
        if upload_id is None:
            started = self._call(
                self._stub.StartResumableUpload,
                pb.StartResumableUploadRequest(
                    path=path, run_id=run_id, size=os.path.getsize(local), overwrite=overwrite,
                ),
            )  # fmt: skip
            if not started.supported:
                return None
            upload_id = started.upload_id
            self._record.save(upload_id)
        held: int | None = offset
        for tries in range(self._retries + 1):
            try:
                if held is None:
                    held = self._held(upload_id)
                self._rewind(held)
                header = pb.UploadHeader(upload_id=upload_id, offset=held)
                reply = self._stub.LogArtifact(
                    messages(header, held), timeout=self._transfer_timeout
                )
            except (grpc.RpcError, Unavailable) as exc:
                again = retryable(exc) if isinstance(exc, grpc.RpcError) else True
                if not again or tries == self._retries:
                    self._give_up(upload_id)
                    raise (error(exc) if isinstance(exc, grpc.RpcError) else exc) from None
                backoff(tries, exc if isinstance(exc, grpc.RpcError) else None)
                held = None  # ask again: the server may hold more or fewer bytes than sent
                continue
            self._record.forget()
            info: pb.FileInfo = reply.file
            return info
        raise AssertionError("unreachable")

    def _give_up(self, upload_id: str) -> None:
        """A failure resuming cannot fix (or the last retry): free the server's copy, unless the
        server is unreachable, in which case the next run of the client resumes."""
        with contextlib.suppress(ArtifactError):
            self._call(
                self._stub.AbortMultipartUpload, pb.AbortMultipartUploadRequest(upload_id=upload_id)
            )
            self._record.forget()

    def _held(self, upload_id: str) -> int:
        status = self._call(
            self._stub.QueryWriteStatus, pb.QueryWriteStatusRequest(upload_id=upload_id)
        )
        return int(status.committed_size)
