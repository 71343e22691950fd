"""Experiments and runs: create, read, list, soft-delete, restore, and the GC's hard deletes.

Every state change is one transaction, and the ones that race with garbage collection (restore,
delete, create a run) lock the rows they change, so a collector that holds a run's row can never
collect a run that is being restored at the same moment. Errors are `protocol.errors`, so the
gRPC layer maps them to status codes like every other failure.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from artifactd.protocol.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from artifactd.protocol.ids import check_run_id
from artifactd_server.store.database import Database, lock_row
from artifactd_server.store.schema import (
    ACTIVE,
    DELETED,
    MAX_LOCATION_LENGTH,
    MAX_NAME_LENGTH,
    ExperimentRow,
    RunRow,
)

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
VIEW_TYPES = ("active_only", "deleted_only", "all")
_Row = TypeVar("_Row", RunRow, ExperimentRow)
_EXPERIMENT_ID = re.compile(r"^[0-9]{1,10}$")
MAX_EXPERIMENT_ID = 2**31 - 1  # experiment_id is a 32-bit INTEGER column


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int


@dataclass(frozen=True)
class Run:
    run_id: str
    experiment_id: str
    run_name: str
    artifact_uri: str
    lifecycle_stage: str
    status: str
    start_time: int
    end_time: int | None
    deleted_time: int | None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_name(name: str, what: str, *, required: bool = False) -> str:
    """An experiment or run name that means the same on every backend store: at most
    MAX_NAME_LENGTH characters (`required`: at least one), and no NUL (`_no_nul`)."""
    if (required and not name) or len(name) > MAX_NAME_LENGTH:
        bounds = "1 to" if required else "at most"
        raise InvalidArgument(f"{what} must be {bounds} {MAX_NAME_LENGTH} characters")
    return _no_nul(name, what)


def _no_nul(text: str, what: str) -> str:
    """PostgreSQL refuses NUL in text (psycopg raises DataError: INTERNAL if it got there),
    SQLite and MariaDB keep it: no name holds one, whatever the backend."""
    if "\x00" in text:
        raise InvalidArgument(f"{what} must not contain NUL characters (U+0000)")
    return text


def check_experiment_id(experiment_id: str) -> int:
    if not _EXPERIMENT_ID.match(experiment_id) or int(experiment_id) > MAX_EXPERIMENT_ID:
        raise InvalidArgument(
            f"experiment_id must be a decimal number up to {MAX_EXPERIMENT_ID}, "
            f"got {experiment_id!r}"
        )
    return int(experiment_id)


def _experiment(row: ExperimentRow) -> Experiment:
    return Experiment(
        str(row.experiment_id),
        row.name,
        row.artifact_location,
        row.lifecycle_stage,
        row.creation_time,
        row.last_update_time,
    )


def _run(row: RunRow) -> Run:
    return Run(
        row.run_id,
        str(row.experiment_id),
        row.run_name,
        row.artifact_uri,
        row.lifecycle_stage,
        row.status,
        row.start_time,
        row.end_time,
        row.deleted_time,
    )


def _stages(view_type: str) -> tuple[str, ...]:
    if view_type not in VIEW_TYPES:
        raise InvalidArgument(f"view type must be one of {VIEW_TYPES}, got {view_type!r}")
    return {"active_only": (ACTIVE,), "deleted_only": (DELETED,), "all": (ACTIVE, DELETED)}[
        view_type
    ]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def ancestors(uri: str) -> list[str]:
    """`a/b/c` -> [`a/b`, `a`]: every prefix of `uri` that ends at a `/` boundary."""
    scheme, sep, rest = uri.partition("://")
    head, body = (scheme + sep, rest) if sep else ("", uri)
    parts = body.split("/")
    return [head + "/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1) if parts[n - 1]]


class TrackingStore:
    """Metadata operations on one backend store."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(self, name: str, location: str | None, default_parent: str) -> Experiment:
        """Creates an experiment at `location`, or at `<default_parent>/<id>` when None.

        The caller has already checked that `location` lies inside an artifact root; this also
        refuses one that equals, contains or lies inside another experiment's location, since
        collecting one experiment would then delete another's artifacts.
        """
        name = check_name(name.strip(), "experiment name", required=True)
        if location is not None and len(location) > MAX_LOCATION_LENGTH - 64:
            raise InvalidArgument("artifact_location is too long")
        now = now_ms()
        try:
            with self.database.transaction() as session:
                if session.scalar(select(ExperimentRow.experiment_id).filter_by(name=name)):
                    raise AlreadyExists(f"an experiment named {name!r} already exists")
                row = ExperimentRow(
                    name=name,
                    artifact_location=location or "",
                    lifecycle_stage=ACTIVE,
                    creation_time=now,
                    last_update_time=now,
                )
                session.add(row)
                session.flush()
                if location is None:
                    row.artifact_location = f"{default_parent}/{row.experiment_id}"
                self._refuse_overlap(session, row)
                return _experiment(row)
        except IntegrityError:
            raise AlreadyExists(f"an experiment named {name!r} already exists") from None

    @staticmethod
    def _refuse_overlap(session: Session, row: ExperimentRow) -> None:
        location = row.artifact_location
        others = ExperimentRow.experiment_id != row.experiment_id
        clash = session.scalar(
            select(ExperimentRow).where(
                others,
                or_(
                    ExperimentRow.artifact_location.in_([location, *ancestors(location)]),
                    ExperimentRow.artifact_location.like(
                        _escape_like(location) + "/%", escape="\\"
                    ),
                ),
            )
        )
        if clash is not None:
            raise FailedPrecondition(
                f"artifact location {location!r} overlaps experiment {clash.experiment_id} "
                f"({clash.name!r}) at {clash.artifact_location!r}; choose a separate folder"
            )

    def get_experiment(self, experiment_id: str = "", name: str = "") -> Experiment:
        if bool(experiment_id) == bool(name):
            raise InvalidArgument("give exactly one of experiment_id and name")
        with self.database.transaction() as session:
            if experiment_id:
                row = session.get(ExperimentRow, check_experiment_id(experiment_id))
                what = f"experiment {experiment_id}"
            else:
                _no_nul(name, "experiment name")
                row = session.scalar(select(ExperimentRow).filter_by(name=name))
                what = f"experiment named {name!r}"
            if row is None:
                raise NotFound(f"there is no {what}")
            return _experiment(row)

    def experiment_at(self, uri: str) -> str | None:
        """The experiment whose artifact location is `uri` or one of its folders, if any.

        Locations never overlap (`_refuse_overlap`), so there is at most one.
        """
        with self.database.transaction() as session:
            found = session.scalar(
                select(ExperimentRow.experiment_id).where(
                    ExperimentRow.artifact_location.in_([uri, *ancestors(uri)])
                )
            )
        return None if found is None else str(found)

    def list_experiments(
        self,
        view_type: str,
        limit: int,
        after_id: int | None = None,
        only: frozenset[str] | None = None,
    ) -> list[Experiment]:
        """A page of experiments by id; `only` restricts it to those ids (None: all)."""
        query = (
            select(ExperimentRow)
            .where(ExperimentRow.lifecycle_stage.in_(_stages(view_type)))
            .order_by(ExperimentRow.experiment_id)
            .limit(limit)
        )
        if only is not None:
            query = query.where(ExperimentRow.experiment_id.in_(sorted(int(e) for e in only)))
        if after_id is not None:
            query = query.where(ExperimentRow.experiment_id > after_id)
        with self.database.transaction() as session:
            return [_experiment(row) for row in session.scalars(query)]

    def _locked_experiment(self, session: Session, experiment_id: str) -> ExperimentRow:
        row = session.scalar(
            select(ExperimentRow)
            .filter_by(experiment_id=check_experiment_id(experiment_id))
            .with_for_update()
        )
        if row is None:
            raise NotFound(f"there is no experiment {experiment_id}")
        return row

    def delete_experiment(self, experiment_id: str) -> Experiment:
        """Marks the experiment and its active runs deleted; their artifacts stay until GC."""
        now = now_ms()
        with self.database.transaction() as session:
            row = self._locked_experiment(session, experiment_id)
            if row.lifecycle_stage == DELETED:
                raise FailedPrecondition(f"experiment {experiment_id} is already deleted")
            row.lifecycle_stage = DELETED
            row.last_update_time = now
            session.execute(
                update(RunRow)
                .where(RunRow.experiment_id == row.experiment_id, RunRow.lifecycle_stage == ACTIVE)
                .values(lifecycle_stage=DELETED, deleted_time=now, deleted_with_experiment=True)
            )
            return _experiment(row)

    def restore_experiment(self, experiment_id: str) -> Experiment:
        """Undoes `delete_experiment`: the runs it deleted come back, runs deleted alone do not."""
        with self.database.transaction() as session:
            row = self._locked_experiment(session, experiment_id)
            if row.lifecycle_stage != DELETED:
                raise FailedPrecondition(f"experiment {experiment_id} is not deleted")
            row.lifecycle_stage = ACTIVE
            row.last_update_time = now_ms()
            session.execute(
                update(RunRow)
                .where(
                    RunRow.experiment_id == row.experiment_id,
                    RunRow.lifecycle_stage == DELETED,
                    RunRow.deleted_with_experiment.is_(True),
                )
                .values(lifecycle_stage=ACTIVE, deleted_time=None, deleted_with_experiment=False)
            )
            return _experiment(row)

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, experiment_id: str, run_name: str = "", start_time: int = 0) -> Run:
        check_name(run_name, "run_name")
        if start_time < 0:
            raise InvalidArgument("start_time must not be negative")
        run_id = uuid.uuid4().hex
        with self.database.transaction() as session:
            # Shared with GC and restore: the experiment cannot be collected under a new run.
            experiment = self._locked_experiment(session, experiment_id)
            if experiment.lifecycle_stage != ACTIVE:
                raise FailedPrecondition(
                    f"experiment {experiment_id} is deleted; restore it before adding runs"
                )
            row = RunRow(
                run_id=run_id,
                experiment_id=experiment.experiment_id,
                run_name=run_name or run_id[:8],
                artifact_uri=f"{experiment.artifact_location}/{run_id}/artifacts",
                lifecycle_stage=ACTIVE,
                status="RUNNING",
                start_time=start_time or now_ms(),
                end_time=None,
                deleted_time=None,
                deleted_with_experiment=False,
            )
            session.add(row)
            session.flush()
            return _run(row)

    def get_run(self, run_id: str) -> Run:
        with self.database.transaction() as session:
            row = session.get(RunRow, check_run_id(run_id))
            if row is None:
                raise NotFound(f"there is no run {run_id}")
            return _run(row)

    def deleted_run_within(self, uri: str) -> Run | None:
        """A deleted run whose artifact location is `uri` or below it, if any: deleting `uri`
        would delete what that run keeps until garbage collection (the index on the stage
        narrows the scan to deleted runs)."""
        prefix = uri.rstrip("/") + "/"
        with self.database.transaction() as session:
            row = session.scalar(
                select(RunRow)
                .where(
                    RunRow.lifecycle_stage != ACTIVE,
                    or_(
                        RunRow.artifact_uri == uri,
                        func.substr(RunRow.artifact_uri, 1, len(prefix)) == prefix,
                    ),
                )
                .limit(1)
            )
            return None if row is None else _run(row)

    def list_runs(
        self,
        experiment_ids: Sequence[str],
        view_type: str,
        limit: int,
        after: tuple[int, str] | None = None,
    ) -> list[Run]:
        """Newest first (by start time, then run_id); `after` is the last (start_time, run_id)."""
        query: Select[RunRow] = (
            select(RunRow)
            .where(RunRow.lifecycle_stage.in_(_stages(view_type)))
            .order_by(RunRow.start_time.desc(), RunRow.run_id)
            .limit(limit)
        )
        if experiment_ids:
            ids = [check_experiment_id(e) for e in experiment_ids]
            query = query.where(RunRow.experiment_id.in_(ids))
        if after is not None:
            start, run_id = after
            query = query.where(
                or_(
                    RunRow.start_time < start,
                    and_(RunRow.start_time == start, RunRow.run_id > run_id),
                )
            )
        with self.database.transaction() as session:
            return [_run(row) for row in session.scalars(query)]

    def _locked_run(self, session: Session, run_id: str) -> RunRow:
        row = session.scalar(
            select(RunRow).filter_by(run_id=check_run_id(run_id)).with_for_update()
        )
        if row is None:
            raise NotFound(f"there is no run {run_id}")
        return row

    def update_run(
        self, run_id: str, status: str | None, end_time: int | None, run_name: str | None
    ) -> Run:
        if status is not None and status not in RUN_STATUSES:
            raise InvalidArgument(f"status must be one of {RUN_STATUSES}, got {status!r}")
        if end_time is not None and end_time < 0:
            raise InvalidArgument("end_time must not be negative")
        if run_name is not None:
            check_name(run_name, "run_name")
        with self.database.transaction() as session:
            row = self._locked_run(session, run_id)
            if row.lifecycle_stage != ACTIVE:
                raise FailedPrecondition(f"run {run_id} is deleted; restore it to change it")
            if status is not None:
                row.status = status
            if end_time is not None:
                row.end_time = end_time
            if run_name:
                row.run_name = run_name
            return _run(row)

    def delete_run(self, run_id: str) -> Run:
        with self.database.transaction() as session:
            row = self._locked_run(session, run_id)
            if row.lifecycle_stage == DELETED:
                raise FailedPrecondition(f"run {run_id} is already deleted")
            row.lifecycle_stage = DELETED
            row.deleted_time = now_ms()
            row.deleted_with_experiment = False
            return _run(row)

    def restore_run(self, run_id: str) -> Run:
        with self.database.transaction() as session:
            row = self._locked_run(session, run_id)
            if row.lifecycle_stage != DELETED:
                raise FailedPrecondition(f"run {run_id} is not deleted")
            experiment = session.get(ExperimentRow, row.experiment_id)
            if experiment is not None and experiment.lifecycle_stage != ACTIVE:
                raise FailedPrecondition(
                    f"run {run_id} belongs to deleted experiment {row.experiment_id}; "
                    "restore the experiment instead"
                )
            row.lifecycle_stage = ACTIVE
            row.deleted_time = None
            row.deleted_with_experiment = False
            return _run(row)

    # -- garbage collection ------------------------------------------------------------------

    def deleted_run_ids(
        self, older_than_ms: int | None, experiment_ids: Sequence[int] = ()
    ) -> list[str]:
        """Deleted runs, deleted at least `older_than_ms` ago (any age in `experiment_ids`)."""
        conditions = [RunRow.lifecycle_stage == DELETED]
        if experiment_ids:
            conditions.append(RunRow.experiment_id.in_(experiment_ids))
        elif older_than_ms is not None:
            conditions.append(RunRow.deleted_time <= now_ms() - older_than_ms)
        with self.database.transaction() as session:
            return list(session.scalars(select(RunRow.run_id).where(*conditions)))

    def deleted_experiment_ids(self, older_than_ms: int | None) -> list[int]:
        conditions = [ExperimentRow.lifecycle_stage == DELETED]
        if older_than_ms is not None:
            conditions.append(ExperimentRow.last_update_time <= now_ms() - older_than_ms)
        with self.database.transaction() as session:
            return list(session.scalars(select(ExperimentRow.experiment_id).where(*conditions)))

    @contextmanager
    def claim_run(self, run_id: str) -> Iterator[Run | None]:
        """Holds a deleted run's row locked while its artifacts are removed, then drops it.

        Yields None when the run is gone, no longer deleted, or held by another collector
        (skip locked): each run is collected by exactly one collector, and a restore waits for
        the lock and then finds nothing. The row is deleted only if the body completes.
        """
        with self.database.transaction() as session:
            row = _lock_deleted(session, RunRow, RunRow.run_id == run_id)
            if row is None:
                yield None
                return
            yield _run(row)
            session.execute(delete(RunRow).where(RunRow.run_id == run_id))

    @contextmanager
    def claim_experiment(self, experiment_id: int) -> Iterator[Experiment | None]:
        """Like `claim_run`, for a deleted experiment that has no runs left.

        Unlike a run's, the lock is waited for: collectors working through the same
        experiment's runs each try the experiment after their last run, and one that counted
        runs still in another's hands holds the lock for a moment; skipping it then could leave
        the experiment to the next collection although the last collector found it empty.
        Waiting cannot deadlock: this transaction holds nothing else.
        """
        with self.database.transaction() as session:
            row = _lock_deleted(
                session, ExperimentRow, ExperimentRow.experiment_id == experiment_id,
                skip_locked=False,
            )  # fmt: skip
            runs_left = session.scalar(
                select(func.count()).select_from(RunRow).filter_by(experiment_id=experiment_id)
            )
            if row is None or runs_left:
                yield None
                return
            yield _experiment(row)
            session.execute(
                delete(ExperimentRow).where(ExperimentRow.experiment_id == experiment_id)
            )


def _lock_deleted(
    session: Session, model: type[_Row], key: ColumnElement[bool], *, skip_locked: bool = True
) -> _Row | None:
    """The deleted row matching `key`, locked for this transaction; None if gone or taken."""
    return lock_row(session, model, key, model.lifecycle_stage == DELETED, skip_locked=skip_locked)
