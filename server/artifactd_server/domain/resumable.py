"""Resumable uploads through the server, for storage that cannot take direct uploads.

ByteStream's resumable writes (grpc-anchors §1): a session names the destination once; each
LogArtifact for it appends at the offset the server reports (QueryWriteStatus), and a stream that
breaks keeps what arrived, invisibly, in a hidden file next to the destination. The file is
published, like any upload, by the stream that ends with `finish` once the size and sha256 of the
whole file check out; the digest of the bytes kept from earlier streams is rebuilt by reading
them back. Sessions share the backend store, the expiry sweeper and AbortMultipartUpload with
direct uploads (`multipart.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.paths import parse
from artifactd_server.domain.multipart import (
    Settings,
    check_destination,
    moved,
    open_session,
    ttl_ms,
)
from artifactd_server.domain.roots import uri_of
from artifactd_server.domain.scopes import Scope, Scopes
from artifactd_server.domain.uploads import Resume, UploadSpec, check_declared_size, parse_digest
from artifactd_server.storage.base import ResumableWrites
from artifactd_server.store.schema import RESUMABLE
from artifactd_server.store.upload_sessions import UploadSession, UploadSessions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Continuation:
    """What a LogArtifact header naming an `upload_id` may say; set fields must agree."""

    upload_id: str
    offset: int
    path: str
    size: int | None
    sha256: str
    run_id: str


class ResumableUploads:
    def __init__(self, scopes: Scopes, sessions: UploadSessions, settings: Settings) -> None:
        self._scopes = scopes
        self._sessions = sessions
        self._settings = settings

    def start(
        self, *, run_id: str, path_text: str, size: int, sha256: str, overwrite: bool, owner: str
    ) -> UploadSession | None:
        """Opens a session, or None when the storage takes direct uploads instead."""
        path = parse(path_text)
        digest = parse_digest(sha256, "sha256") or ""
        scope = self._scopes.for_write(run_id, path)
        storage = scope.storage
        if not isinstance(storage, ResumableWrites):
            return None
        check_declared_size(size, scope, path)
        full = scope.full(path)
        check_destination(storage, full, path, overwrite)
        token = storage.start_resumable(full)
        try:
            session = self._sessions.create(
                kind=RESUMABLE, root_uri=uri_of(storage, scope.base), path=str(path),
                run_id=run_id, owner=owner, backend_upload_id=token, size=size,
                part_size=max(size, 1), sha256=digest, overwrite=overwrite,
                ttl_ms=ttl_ms(self._settings.session_ttl),
            )  # fmt: skip
        except BaseException:
            storage.discard_resumable(full, token)
            raise
        log.info("resumable upload %s of %s: %d bytes", session.upload_id, path, size)
        return session

    def _open(self, upload_id: str, owner: str) -> tuple[UploadSession, Scope, ResumableWrites]:
        session, scope = open_session(
            self._sessions, self._scopes, upload_id, owner, RESUMABLE,
            "it is a direct upload: send its parts to storage, then CompleteMultipartUpload",
            self._settings.session_ttl,
        )  # fmt: skip
        storage = scope.storage
        if not isinstance(storage, ResumableWrites):
            raise moved(upload_id)
        return session, scope, storage

    def status(self, upload_id: str, owner: str) -> tuple[int, int]:
        """(bytes held, declared size) of a session."""
        session, scope, storage = self._open(upload_id, owner)
        held = storage.resumable_size(scope.full(parse(session.path)), session.backend_upload_id)
        return held, session.size

    def spec(self, continuation: Continuation, owner: str) -> UploadSpec:
        """The upload a LogArtifact header continues, checked against what it says."""
        session, scope, storage = self._open(continuation.upload_id, owner)
        mismatched = [
            name
            for name, given, recorded in (
                ("path", continuation.path, session.path),
                ("run_id", continuation.run_id, session.run_id),
                ("sha256", continuation.sha256.lower(), session.sha256),
            )
            if given and given != recorded
        ]
        if continuation.size is not None and continuation.size != session.size:
            mismatched.append("size")
        if mismatched:
            raise InvalidArgument(
                f"the header's {', '.join(mismatched)} differ from upload "
                f"{session.upload_id}'s; leave them empty or give the same values"
            )
        if continuation.offset < 0:
            raise InvalidArgument(f"offset must not be negative, got {continuation.offset}")

        if continuation.offset:
            log.info(
                "continuing resumable upload %s of %s at byte %d",
                session.upload_id, session.path, continuation.offset,
            )  # fmt: skip

        def finished() -> None:
            self._sessions.close(session.upload_id)
            log.info("completed resumable upload %s of %s", session.upload_id, session.path)

        return UploadSpec(
            path=parse(session.path),
            size=session.size,
            sha256=session.sha256 or None,
            overwrite=session.overwrite,
            scope=scope,
            resume=Resume(
                storage,
                session.backend_upload_id,
                continuation.offset,
                finished,
                KeepAlive(self._sessions, session, self._settings.session_ttl),
            ),
        )


class KeepAlive:
    """Touches a session while a stream writes to it, so no sweeper takes it mid-stream.

    A stream longer than the session TTL would otherwise outlive its session: some replica's
    sweeper would discard the bytes it is appending to. Called for every chunk, it writes to
    the backend store at most every quarter TTL (and at most once a minute); if the session was
    aborted meanwhile (AbortMultipartUpload, its run collected) the stream fails there instead
    of publishing a file nobody owns any more.
    """

    def __init__(self, sessions: UploadSessions, session: UploadSession, ttl: float) -> None:
        self._sessions = sessions
        self._session = session
        self._ttl = ttl
        self._interval = min(60.0, ttl / 4)
        self._last = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        self._sessions.touch(self._session.upload_id, self._session.owner, ttl_ms(self._ttl))
