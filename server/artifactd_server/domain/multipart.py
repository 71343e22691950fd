"""Direct transfers: presigned multipart uploads with server-side sessions, presigned downloads.

The bytes of a direct upload never pass through the server; what the server guards is the
session. The destination is fixed when the session is created, through the same path grammar,
run checks and roots as every streamed upload, and is never taken from a later request (MLflow
completed into whatever key the client named: its #11225). Only the session's owner can list,
refresh, complete or abort it; unknown, expired and foreign ids all read as NOT_FOUND. Completion
publishes only when every part is in storage with the size the layout says and the ETag the
client got from storage. Sessions left unused for the session TTL are aborted by `sweep` (a
thread in every replica, and GC), so storage keeps no orphaned parts; each is claimed in the
backend store first (`UploadSessions.claim`), so replicas sweeping at once abort each session
exactly once and never one a client is still using. The same sweep discards what streams
through a server that died left in storage (`streamed.py`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from artifactd.protocol.errors import (
    AlreadyExists,
    ArtifactError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from artifactd.protocol.paths import ArtifactPath, parse
from artifactd_server.domain.roots import uri_of
from artifactd_server.domain.scopes import Scope, Scopes
from artifactd_server.domain.uploads import check_declared_size, parse_digest
from artifactd_server.storage.base import (
    STARTING,
    DirectTransfers,
    Entry,
    PartLimits,
    PresignedRequest,
    ResumableWrites,
    Storage,
    StoredPart,
)
from artifactd_server.store.schema import MULTIPART, RESUMABLE, STREAMED
from artifactd_server.store.tracking import now_ms
from artifactd_server.store.upload_sessions import UploadSession, UploadSessions

log = logging.getLogger(__name__)

SETTLE_STARTING_AFTER = 10.0
"""Seconds before a sweeper settles a stream record left at `base.STARTING` (its server died
creating the storage-side upload): `Storage.discard_unrecorded` then spares uploads started
after halfway between the record and now, at least 5 s after the record, which leaves room for
the creation's latency and for storage timestamps in whole seconds."""

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 64 * MiB
MAX_URLS_PER_CALL = 100


@dataclass(frozen=True)
class Part:
    number: int
    offset: int
    size: int
    request: PresignedRequest | None = None


@dataclass(frozen=True)
class Settings:
    url_ttl: float = 900.0  # presigned part URLs (MLflow's presigned upload default)
    session_ttl: float = 24 * 3600.0
    download_ttl: float = 300.0  # MLFLOW_PRESIGNED_DOWNLOAD_URL_TTL_SECONDS' default


def choose_part_size(size: int, wanted: int, limits: PartLimits) -> int:
    """`wanted` (or the default), raised to the backend's minimum and to what fits its part
    count; `InvalidArgument` if the file is larger than the backend can take in parts."""
    part = max(wanted or DEFAULT_PART_SIZE, limits.min_size)
    if _ceil_div(size, part) > limits.max_parts:
        part = _ceil_div(_ceil_div(size, limits.max_parts), MiB) * MiB
    if part > limits.max_size:
        raise InvalidArgument(
            f"{size} bytes is more than this storage takes in one multipart upload "
            f"({limits.max_parts} parts of at most {limits.max_size} bytes)"
        )
    return part


def check_destination(
    storage: Storage, full: ArtifactPath, path: ArtifactPath, overwrite: bool
) -> None:
    """Refuses a session that could never publish: a directory at the path, or a file when the
    upload may not overwrite (checked again, atomically where storage can, at publication)."""
    existing = None
    with contextlib.suppress(NotFound):
        existing = storage.stat(full)
    if existing is not None and existing.is_dir:
        raise FailedPrecondition(f"'{path}' is a directory; a file cannot replace it")
    if existing is not None and not overwrite:
        raise AlreadyExists(f"'{path}' already exists and the upload asked not to overwrite it")


def open_session(
    sessions: UploadSessions,
    scopes: Scopes,
    upload_id: str,
    owner: str,
    kind: str,
    other: str,
    ttl: float,
) -> tuple[UploadSession, Scope]:
    """The caller's open session of `kind`, kept open `ttl` seconds more since it is in use,
    and the scope it writes in (checked again: a run deleted meanwhile takes no more bytes, and
    the root must still be configured)."""
    if not upload_id:
        raise InvalidArgument("upload_id is required")
    session = sessions.touch(upload_id, owner, ttl_ms(ttl))
    if session.kind != kind:
        raise FailedPrecondition(f"upload {upload_id} cannot be used so: {other}")
    scope = scopes.for_write(session.run_id, parse(session.path))
    if uri_of(scope.storage, scope.base) != session.root_uri:
        raise moved(upload_id)
    return session, scope


def ttl_ms(seconds: float) -> int:
    return int(seconds * 1000)


def moved(upload_id: str) -> FailedPrecondition:
    """The session's root is not among this server's any more (its configuration changed)."""
    return FailedPrecondition(f"the storage of upload {upload_id} is no longer configured here")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _same_etag(a: str, b: str) -> bool:
    return a.strip().strip('"') == b.strip().strip('"')


def _numbers(text: Iterable[int]) -> str:
    return ", ".join(str(n) for n in text)


class DirectUploads:
    def __init__(self, scopes: Scopes, sessions: UploadSessions, settings: Settings) -> None:
        self._scopes = scopes
        self._sessions = sessions
        self.settings = settings

    # -- uploads ---------------------------------------------------------------------------

    def create(
        self,
        *,
        run_id: str,
        path_text: str,
        size: int,
        sha256: str,
        overwrite: bool,
        part_size: int,
        owner: str,
    ) -> tuple[UploadSession, list[Part]] | None:
        """Opens a session and returns it with the first parts' URLs; None if the storage
        behind the path cannot take direct uploads."""
        path = parse(path_text)
        if size <= 0:
            raise InvalidArgument(
                f"size must be positive for a multipart upload, got {size}; upload small and "
                "empty files with LogArtifact"
            )
        if part_size < 0:
            raise InvalidArgument(f"part_size must not be negative, got {part_size}")
        digest = parse_digest(sha256, "sha256") or ""
        scope = self._scopes.for_write(run_id, path)
        storage = scope.storage
        if not isinstance(storage, DirectTransfers) or not storage.capabilities.multipart_upload:
            return None
        check_declared_size(size, scope, path)
        chosen = choose_part_size(size, part_size, storage.part_limits)
        full = scope.full(path)
        check_destination(storage, full, path, overwrite)
        backend_id = storage.create_multipart(full, size=size, sha256=digest or None)
        try:
            session = self._sessions.create(
                kind=MULTIPART, root_uri=uri_of(storage, scope.base), path=str(path),
                run_id=run_id, owner=owner, backend_upload_id=backend_id, size=size,
                part_size=chosen, sha256=digest, overwrite=overwrite,
                ttl_ms=ttl_ms(self.settings.session_ttl),
            )  # fmt: skip
        except BaseException:
            storage.abort_multipart(full, backend_id)
            raise
        log.info(
            "multipart upload %s of %s (run %s): %d bytes in %d parts",
            session.upload_id, path, run_id or "-", size, session.part_count,
        )  # fmt: skip
        first = range(1, min(session.part_count, MAX_URLS_PER_CALL) + 1)
        return session, self._presign(session, scope, storage, first)

    def _open(self, upload_id: str, owner: str) -> tuple[UploadSession, Scope, DirectTransfers]:
        session, scope = open_session(
            self._sessions, self._scopes, upload_id, owner, MULTIPART,
            "it is a resumable upload: continue it with LogArtifact", self.settings.session_ttl,
        )  # fmt: skip
        storage = scope.storage
        if not isinstance(storage, DirectTransfers):
            raise moved(upload_id)
        return session, scope, storage

    def _presign(
        self, session: UploadSession, scope: Scope, storage: DirectTransfers, numbers: Iterable[int]
    ) -> list[Part]:
        full = scope.full(parse(session.path))
        parts = []
        for number in numbers:
            size = session.part_size_of(number)
            request = storage.presign_part(
                full, session.backend_upload_id, number, size, self.settings.url_ttl
            )
            parts.append(Part(number, (number - 1) * session.part_size, size, request))
        return parts

    def urls(self, upload_id: str, numbers: Sequence[int], owner: str) -> list[Part]:
        session, scope, storage = self._open(upload_id, owner)
        if not numbers:
            raise InvalidArgument("part_numbers is empty")
        if len(numbers) > MAX_URLS_PER_CALL:
            raise InvalidArgument(f"at most {MAX_URLS_PER_CALL} part URLs per call")
        bad = sorted({n for n in numbers if not 1 <= n <= session.part_count})
        if bad:
            raise InvalidArgument(
                f"part numbers {_numbers(bad)} are outside 1..{session.part_count}"
            )
        return self._presign(session, scope, storage, sorted(set(numbers)))

    def stored_parts(self, upload_id: str, owner: str) -> tuple[UploadSession, list[StoredPart]]:
        session, scope, storage = self._open(upload_id, owner)
        full = scope.full(parse(session.path))
        return session, storage.list_parts(full, session.backend_upload_id)

    def complete(self, upload_id: str, claimed: Sequence[StoredPart], owner: str) -> Entry:
        session, scope, storage = self._open(upload_id, owner)
        full = scope.full(parse(session.path))
        numbers = [p.number for p in claimed]
        expected = list(range(1, session.part_count + 1))
        if sorted(numbers) != expected:
            missing = sorted(set(expected) - set(numbers))
            extra = sorted(set(numbers) - set(expected))
            duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
            problems = [
                f"missing parts {_numbers(missing)}" if missing else "",
                f"unknown parts {_numbers(extra)}" if extra else "",
                f"parts listed twice {_numbers(duplicated)}" if duplicated else "",
            ]
            raise InvalidArgument(
                f"complete needs each of parts 1..{session.part_count} once: "
                + "; ".join(p for p in problems if p)
            )
        stored = {p.number: p for p in storage.list_parts(full, session.backend_upload_id)}
        absent = [n for n in expected if n not in stored]
        if absent:
            raise FailedPrecondition(
                f"storage holds no parts {_numbers(absent)} of '{session.path}'; upload them "
                "(ListMultipartUploadParts shows what is there) and complete again"
            )
        wrong_size = [n for n in expected if stored[n].size != session.part_size_of(n)]
        if wrong_size:
            raise FailedPrecondition(
                f"parts {_numbers(wrong_size)} of '{session.path}' have the wrong size (part "
                f"size {session.part_size}, file size {session.size}); upload them again"
            )
        mismatched = [p.number for p in claimed if not _same_etag(p.etag, stored[p.number].etag)]
        if mismatched:
            raise FailedPrecondition(
                f"the ETags given for parts {_numbers(mismatched)} of '{session.path}' differ "
                "from what storage holds: a part was replaced or the ETag is wrong"
            )
        ordered = [stored[n] for n in expected]
        try:
            entry = storage.complete_multipart(
                full, session.backend_upload_id, ordered, size=session.size,
                sha256=session.sha256 or None, overwrite=session.overwrite,
            )  # fmt: skip
        except AlreadyExists:
            self._discard(session, storage, full)  # nothing the client can fix: free the parts
            raise
        self._sessions.close(session.upload_id)
        log.info("completed multipart upload %s of %s", session.upload_id, session.path)
        return scope.relative(entry)

    def abort(self, upload_id: str, owner: str) -> bool:
        """Discards a session of either kind and what storage holds of it."""
        if not upload_id:
            raise InvalidArgument("upload_id is required")
        with self._sessions.claim(upload_id, owner=owner) as session:
            if session is None:
                return False
            self._free(session)
        return True

    def _discard(
        self, session: UploadSession, storage: DirectTransfers, full: ArtifactPath
    ) -> None:
        storage.abort_multipart(full, session.backend_upload_id)
        self._sessions.close(session.upload_id)
        log.info("aborted multipart upload %s of %s", session.upload_id, session.path)

    def _free(self, session: UploadSession) -> None:
        """Frees what storage holds for a claimed session (parts, kept bytes, or what a stream
        whose server died left: `domain.streamed`)."""
        location = self._scopes.locate(session.root_uri)
        storage = location.storage
        full = ArtifactPath(location.path.parts + parse(session.path).parts)
        if session.kind == RESUMABLE and isinstance(storage, ResumableWrites):
            storage.discard_resumable(full, session.backend_upload_id)
        elif session.kind == MULTIPART and isinstance(storage, DirectTransfers):
            storage.abort_multipart(full, session.backend_upload_id)
        elif session.kind == STREAMED and session.backend_upload_id != STARTING:
            storage.discard_leftover(full, session.backend_upload_id)
        elif session.kind == STREAMED:  # its server died creating the upload (base.STARTING)
            age = (now_ms() - session.creation_time) / 1000
            if age < SETTLE_STARTING_AFTER:
                raise FailedPrecondition(
                    f"the upload of '{session.path}' whose server died while creating it is "
                    f"settled once its record is {SETTLE_STARTING_AFTER:g} s old ({age:.1f} s now)"
                )
            halfway = session.creation_time / 1000 + age / 2
            storage.discard_unrecorded(full, halfway, self._sessions.backend_upload_ids())
        log.info("aborted %s upload %s of %s", session.kind, session.upload_id, session.path)

    def sweep(self) -> int:
        """Aborts sessions unused for the session TTL with what storage holds of them; returns
        how many this call aborted (with other replicas sweeping, the counts add up to the
        sessions aborted: each is claimed by one sweeper)."""
        swept = sum(
            self._release(upload_id, expired=True) for upload_id in self._sessions.expired_ids()
        )
        if swept:
            log.info("swept %d expired upload sessions", swept)
        return swept

    def abort_run(self, run_id: str) -> int:
        """Aborts every open session of a run (its garbage collection); raises if one fails,
        so the run is kept for the next collection rather than leaving parts behind."""
        sessions = self._sessions.of_run(run_id)
        failed = 0
        aborted = 0
        for session in sessions:
            try:
                aborted += self._release(session.upload_id, expired=False, quiet=False)
            except ArtifactError as exc:
                log.warning("could not abort upload %s: %s", session.upload_id, exc)
                failed += 1
        if failed:
            raise FailedPrecondition(f"{failed} open uploads of run {run_id} could not be aborted")
        return aborted

    def _release(self, upload_id: str, *, expired: bool, quiet: bool = True) -> bool:
        """Claims a session and frees it; whether this call did (False: someone else had, or
        it is in use again). A storage error keeps the session for the next sweep; `quiet`
        logs it and returns False, otherwise it is raised."""
        try:
            with self._sessions.claim(upload_id, expired=expired) as session:
                if session is None:
                    return False
                self._free(session)
        except ArtifactError as exc:
            if not quiet:
                raise
            log.warning("could not abort upload %s: %s", upload_id, exc)
            return False
        return True

    # -- downloads -------------------------------------------------------------------------

    def download_url(self, run_id: str, path_text: str) -> tuple[Entry, PresignedRequest] | None:
        """A presigned download of a file, or None when its storage has none (download it
        through the server). The path gets the same checks and answers as in every other RPC,
        whether or not the storage can presign: a bad path is INVALID_ARGUMENT, a missing file
        NOT_FOUND, a directory FAILED_PRECONDITION."""
        path = parse(path_text)
        scope = self._scopes.for_read(run_id)
        storage = scope.storage
        full = scope.full(path)
        if not isinstance(storage, DirectTransfers) or not storage.capabilities.presigned_urls:
            if storage.stat(full).is_dir:
                raise FailedPrecondition(f"'{path}' is a directory, not a file")
            return None
        entry, request = storage.presign_download(full, self.settings.download_ttl)
        return scope.relative(entry), request
