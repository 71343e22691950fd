"""Files streamed through the server whose storage-side upload would outlive a killed server.

A file streamed with LogArtifact(s) to an S3 destination becomes a multipart upload once it
passes one part (8 MiB): its parts are stored, invisibly, until the commit completes it. A
replica SIGKILLed mid-stream leaves that upload in the bucket, and with several replicas on one
bucket nothing in storage tells a dead replica's upload from a live one's, so a sweep by age
alone must wait a day (`app.STALE_UPLOAD_AGE`). Instead the storage reports a cleanup handle
when it starts such an upload (`Upload.on_cleanup_handle`), and it is recorded here as an upload
session of kind STREAMED, following the resumable uploads' pattern: touched while the stream
writes (every quarter TTL, at most once a minute), deleted when the file is published or
discarded, and left to expire when its server dies. Every replica's sweeper
(`DirectUploads.sweep`) claims expired sessions under a row lock that skips rows others hold,
so exactly one of them discards what storage keeps (`Storage.discard_leftover`), within
`--streamed-upload-ttl` plus one sweep interval of the last bytes received.

That TTL is not `--multipart-session-ttl` and is much shorter by default: nobody can resume a
broken stream, so its parts are garbage as soon as its server is gone, whereas a direct or
resumable session waits for its client to come back. A file of one part or less, and every
backend whose uploads report no handle, cost nothing here: no row is written without a handle.
"""

from __future__ import annotations

import logging
import threading
import time

from artifactd.protocol.errors import Aborted, NotFound
from artifactd_server.domain.multipart import ttl_ms
from artifactd_server.domain.roots import uri_of
from artifactd_server.domain.uploads import UploadSpec
from artifactd_server.storage.base import Upload
from artifactd_server.store.schema import STREAMED
from artifactd_server.store.upload_sessions import UploadSessions

log = logging.getLogger(__name__)


class StreamedUploads:
    """Makes the record keeper (`StreamTracking`) of each new file a stream sends."""

    def __init__(self, sessions: UploadSessions, ttl: float) -> None:
        self._sessions = sessions
        self.ttl = ttl

    def tracking(self, spec: UploadSpec, owner: str) -> StreamTracking:
        return StreamTracking(self._sessions, self.ttl, spec, owner)


class StreamTracking:
    """The record of one streamed file's storage-side upload, from the storage's first report
    to publication (`uploads.Tracking`)."""

    def __init__(self, sessions: UploadSessions, ttl: float, spec: UploadSpec, owner: str) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._spec = spec
        self._owner = owner
        self._interval = min(60.0, ttl / 4)
        self._lock = threading.Lock()
        self._session_id: str | None = None  # the row's id while storage holds something
        self._touched = 0.0

    def follow(self, upload: Upload) -> None:
        """Has `upload` report its cleanup handle here (a no-op for most backends)."""
        upload.on_cleanup_handle(self._reported)

    def _reported(self, handle: str | None) -> None:
        """The storage's report, on the thread that writes: a handle is recorded before any
        bytes are stored under it (a failure fails the write, and the upload is aborted); None
        forgets the record, which must not fail a file already published: a record left
        behind expires, and its sweep finds nothing to discard. A new handle (STARTING, then
        the storage's name for the upload) is recorded before the previous record is deleted,
        so a server killed at any moment leaves at least one."""
        with self._lock:
            if handle is None:
                self._forget()
                return
            previous = self._session_id
            spec, scope, size = self._spec, self._spec.scope, self._spec.size or 0
            session = self._sessions.create(
                kind=STREAMED, root_uri=uri_of(scope.storage, scope.base), path=str(spec.path),
                run_id=scope.run_id, owner=self._owner, backend_upload_id=handle, size=size,
                part_size=max(size, 1), sha256=spec.sha256 or "", overwrite=spec.overwrite,
                ttl_ms=ttl_ms(self._ttl),
            )  # fmt: skip
            self._session_id = session.upload_id
            self._touched = time.monotonic()
            if previous is not None:
                self._forget(previous)

    def _forget(self, session_id: str | None = None) -> None:
        """Deletes the record `session_id`, by default the current one."""
        if session_id is None:
            session_id, self._session_id = self._session_id, None
        if session_id is None:
            return
        try:
            self._sessions.close(session_id)
        except Exception as exc:
            log.warning(
                "could not delete the record of the upload of '%s' (it expires unused): %s",
                self._spec.path, exc,
            )  # fmt: skip

    def keepalive(self) -> None:
        """Called for every chunk written to storage: touches the record at most every quarter
        TTL (and at most once a minute), so no sweeper takes an upload still being written."""
        session_id = self._session_id
        if session_id is None:
            return
        now = time.monotonic()
        if now - self._touched < self._interval:
            return
        self._touch(session_id)
        self._touched = now

    def confirm(self) -> None:
        """Before the file is published: the upload is still recorded (no sweeper discarded
        it), and stays so for a whole TTL while it waits to be committed."""
        session_id = self._session_id
        if session_id is not None:
            self._touch(session_id)
            self._touched = time.monotonic()

    def _touch(self, session_id: str) -> None:
        try:
            self._sessions.touch(session_id, self._owner, ttl_ms(self._ttl))
        except NotFound:
            raise Aborted(
                f"the upload of '{self._spec.path}' was discarded in storage while it was being "
                f"received: it sat idle longer than the streamed-upload TTL ({self._ttl:g} s), "
                "or its run was collected; nothing was stored, send it again"
            ) from None
