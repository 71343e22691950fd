"""Open direct uploads in the backend store: created, looked up by id and owner, expired, closed.

A session outlives the server process that created it (a client may resume against a restarted
or another replica), and every replica's sweeper sees the same expiry times. Expiry slides: each
use of a session (`touch`: part URLs, a status query, a stream continuing it, and a stream's
keep-alive while it writes) moves it to now + the TTL, so an upload still in progress is never
swept however long it takes, and one left alone goes a TTL after its last use.

Every replica sweeps, and garbage collection and AbortMultipartUpload release sessions too;
`claim` makes each session released by exactly one of them: it holds the session's row locked
(`lock_row`) while storage frees the parts or kept bytes, and deletes the row in the same
transaction. A touch waits for a claim in progress and then finds the session gone, and a sweep
skips a session whose row a touch holds, so an expiry extended at the last moment is honoured.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, select, update

from artifactd.protocol.errors import InvalidArgument, NotFound
from artifactd_server.store.database import Database, lock_row
from artifactd_server.store.schema import MultipartUploadRow
from artifactd_server.store.tracking import now_ms


@dataclass(frozen=True)
class UploadSession:
    upload_id: str
    kind: str
    root_uri: str
    path: str
    run_id: str
    owner: str
    backend_upload_id: str
    size: int
    part_size: int
    sha256: str
    overwrite: bool
    creation_time: int
    expiry_time: int

    @property
    def part_count(self) -> int:
        return max(1, -(-self.size // self.part_size))

    def part_size_of(self, number: int) -> int:
        """The size part `number` (1-based) must have."""
        if number < self.part_count:
            return self.part_size
        return self.size - self.part_size * (self.part_count - 1)


def _session(row: MultipartUploadRow) -> UploadSession:
    return UploadSession(
        row.upload_id, row.kind, row.root_uri, row.path, row.run_id, row.owner,
        row.backend_upload_id, row.size, row.part_size, row.sha256, row.overwrite,
        row.creation_time, row.expiry_time,
    )  # fmt: skip


class UploadSessions:
    def __init__(self, database: Database) -> None:
        self.database = database

    def create(
        self,
        *,
        kind: str,
        root_uri: str,
        path: str,
        run_id: str,
        owner: str,
        backend_upload_id: str,
        size: int,
        part_size: int,
        sha256: str,
        overwrite: bool,
        ttl_ms: int,
    ) -> UploadSession:
        now = now_ms()
        row = MultipartUploadRow(
            upload_id=secrets.token_hex(16),  # unguessable: 128 random bits
            kind=kind, root_uri=root_uri, path=path, run_id=run_id, owner=owner,
            backend_upload_id=backend_upload_id, size=size, part_size=part_size, sha256=sha256,
            overwrite=overwrite, creation_time=now, expiry_time=now + ttl_ms,
        )  # fmt: skip
        with self.database.transaction() as session:
            session.add(row)
        return _session(row)

    def get(self, upload_id: str, owner: str) -> UploadSession:
        """The open session `upload_id` of `owner`; `NotFound` otherwise, expired or not theirs
        alike (a caller learns nothing about other callers' sessions)."""
        with self.database.transaction() as session:
            row = session.get(MultipartUploadRow, check_upload_id(upload_id))
            if row is None or row.owner != owner or row.expiry_time <= now_ms():
                raise _not_open(upload_id)
            return _session(row)

    def touch(self, upload_id: str, owner: str, ttl_ms: int) -> UploadSession:
        """Like `get`, and the session stays open for `ttl_ms` more: it is in use."""
        check_upload_id(upload_id)
        with self.database.transaction() as session:
            now = now_ms()
            row_of = MultipartUploadRow
            extended = session.execute(
                update(row_of)
                .where(
                    row_of.upload_id == upload_id,
                    row_of.owner == owner,
                    row_of.expiry_time > now,
                )
                .values(expiry_time=now + ttl_ms)
                .execution_options(synchronize_session=False)
            )
            row = session.get(row_of, upload_id) if extended.rowcount else None  # type: ignore[attr-defined]
            if row is None:
                raise _not_open(upload_id)
            return _session(row)

    @contextmanager
    def claim(
        self, upload_id: str, *, owner: str | None = None, expired: bool = False
    ) -> Iterator[UploadSession | None]:
        """Holds a session while the body frees what storage keeps of it, then forgets it.

        Yields None when the session is gone (another claim released it, or it completed),
        not `owner`'s, or, with `expired`, in use again or held by another claim (a sweep skips
        it and moves on). Without `expired` the claim waits for another holder (a touch, or a
        claim that may yet fail and leave the session to this one). The row is deleted only if
        the body completes; an exception keeps it, for the next sweep.
        """
        conditions: list[ColumnElement[bool]] = [
            MultipartUploadRow.upload_id == check_upload_id(upload_id)
        ]
        if owner is not None:
            conditions.append(MultipartUploadRow.owner == owner)
        if expired:
            conditions.append(MultipartUploadRow.expiry_time <= now_ms())
        with self.database.transaction() as session:
            row = lock_row(session, MultipartUploadRow, *conditions, skip_locked=expired)
            if row is None:
                yield None
                return
            yield _session(row)
            session.execute(
                delete(MultipartUploadRow).where(MultipartUploadRow.upload_id == upload_id)
            )

    def close(self, upload_id: str) -> bool:
        """Forgets a session; returns whether it was there."""
        with self.database.transaction() as session:
            result = session.execute(
                delete(MultipartUploadRow).where(MultipartUploadRow.upload_id == upload_id)
            )
            return bool(getattr(result, "rowcount", 0))

    def expired(self, limit: int = 100) -> list[UploadSession]:
        with self.database.transaction() as session:
            rows = session.scalars(
                select(MultipartUploadRow)
                .where(MultipartUploadRow.expiry_time <= now_ms())
                .order_by(MultipartUploadRow.expiry_time)
                .limit(limit)
            )
            return [_session(row) for row in rows]

    def expired_ids(self, limit: int = 100) -> list[str]:
        """Ids of expired sessions, oldest first: candidates for `claim(..., expired=True)`."""
        return [session.upload_id for session in self.expired(limit)]

    def backend_upload_ids(self) -> set[str]:
        """The storage-side handles of every open session and stream record: what a sweep of
        unrecorded uploads must leave alone (`Storage.discard_unrecorded`)."""
        with self.database.transaction() as session:
            return set(session.scalars(select(MultipartUploadRow.backend_upload_id).distinct()))

    def of_run(self, run_id: str) -> list[UploadSession]:
        with self.database.transaction() as session:
            rows = session.scalars(
                select(MultipartUploadRow).where(MultipartUploadRow.run_id == run_id)
            )
            return [_session(row) for row in rows]


def check_upload_id(upload_id: str) -> str:
    """An empty id is a malformed request, INVALID_ARGUMENT for every caller (checked before
    authorization, like any syntax), not a session that is missing."""
    if not upload_id:
        raise InvalidArgument(
            "upload_id is empty: give the id StartResumableUpload or CreateMultipartUpload "
            "returned",
            field="upload_id",
        )
    if "\x00" in upload_id:  # no id holds one, and PostgreSQL refuses it in a query (INTERNAL)
        raise InvalidArgument(
            "upload_id contains a NUL character: give the id StartResumableUpload or "
            "CreateMultipartUpload returned",
            field="upload_id",
        )
    return upload_id


def _not_open(upload_id: str) -> NotFound:
    return NotFound(
        f"no open multipart upload {upload_id!r} (never created, completed, aborted, "
        "expired, or not yours); start a new one"
    )
