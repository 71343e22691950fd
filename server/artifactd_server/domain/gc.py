"""Garbage collection: the only thing that removes the bytes of deleted runs and experiments.

The plan is validated before anything is deleted: named runs and experiments must be deleted
(and old enough, with `older_than`), or nothing happens and the caller is told which are not.
Each run is then collected under a lock on its row (`TrackingStore.claim_run`): artifacts
first, then the row, so a crash in between leaves a deleted run that the next collection
finishes, and two collectors never both act on one run. A failure on one run is reported and
the others go on. Artifact locations are only ever acted on through `ArtifactRoots.locate`, so
a run whose recorded location lies outside the configured roots fails instead of deleting
anything there; the local adapter resolves symlinks before deleting and never follows one out.

The same generator serves the CollectGarbage RPC and `artifactd gc` without a server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from artifactd.protocol.errors import ArtifactError, FailedPrecondition, InvalidArgument, NotFound
from artifactd.protocol.ids import check_run_id
from artifactd.protocol.paths import ArtifactPath
from artifactd.v1 import run_service_pb2 as rpb
from artifactd_server.domain.multipart import DirectUploads, Settings
from artifactd_server.domain.roots import ArtifactRoots
from artifactd_server.domain.scopes import Scopes
from artifactd_server.store.schema import DELETED
from artifactd_server.store.tracking import (
    Experiment,
    Run,
    TrackingStore,
    check_experiment_id,
    now_ms,
)
from artifactd_server.store.upload_sessions import UploadSessions

log = logging.getLogger(__name__)

_RUN = rpb.GARBAGE_KIND_RUN
_EXPERIMENT = rpb.GARBAGE_KIND_EXPERIMENT
_KIND_NAMES = {_RUN: "run", _EXPERIMENT: "experiment"}
_Claimed = TypeVar("_Claimed", Run, Experiment)


@dataclass
class _Plan:
    run_ids: list[str] = field(default_factory=list)
    experiment_ids: list[int] = field(default_factory=list)
    parents: set[int] = field(default_factory=set)  # experiments of the named runs
    missing: list[rpb.GarbageEvent] = field(default_factory=list)


class GarbageCollector:
    def __init__(
        self, store: TrackingStore, roots: ArtifactRoots, direct: DirectUploads | None = None
    ) -> None:
        self._store = store
        self._roots = roots
        self._direct = direct  # open direct uploads: a collected run's are aborted with it
        self.swept = 0
        """Expired upload sessions the last `collect` aborted (other collectors' not counted)."""

    def collect(
        self,
        *,
        older_than: float | None = None,
        run_ids: Sequence[str] = (),
        experiment_ids: Sequence[str] = (),
        dry_run: bool = False,
    ) -> Iterator[rpb.CollectGarbageResponse]:
        """One response per run and experiment handled, then the summary."""
        plan = self._plan(older_than, run_ids, experiment_ids)
        summary = rpb.GarbageSummary(dry_run=dry_run)
        if self._direct is not None and not dry_run:
            self.swept = self._direct.sweep()  # expired sessions' parts are garbage too
        for event in plan.missing:
            yield _tally(summary, event)
        for run_id in plan.run_ids:
            yield _tally(summary, self._collect_run(run_id, dry_run))
        for experiment_id in plan.experiment_ids:
            yield _tally(summary, self._collect_experiment(experiment_id, dry_run))
        log.info(
            "garbage collection%s: %d runs, %d experiments collected, %d skipped, %d failed",
            " (dry run)" if dry_run else "",
            summary.runs_collected,
            summary.experiments_collected,
            summary.skipped,
            summary.failed,
        )
        yield rpb.CollectGarbageResponse(summary=summary)

    # -- planning ----------------------------------------------------------------------------

    def _plan(
        self, older_than: float | None, run_ids: Sequence[str], experiment_ids: Sequence[str]
    ) -> _Plan:
        if older_than is not None and not older_than >= 0:
            raise InvalidArgument("older_than must be a non-negative number of seconds")
        # An age past the epoch (up to infinity) means nothing is old enough: capped there, so
        # the threshold stays an integer that every database can compare (SQLite's is 64-bit).
        older_ms = None if older_than is None else int(min(older_than * 1000, now_ms() + 1))
        threshold = None if older_ms is None else now_ms() - older_ms
        plan = _Plan()
        refused = [
            *self._check_runs(plan, run_ids, threshold),
            *self._check_experiments(plan, experiment_ids, threshold),
        ]
        if refused:
            raise FailedPrecondition(
                "nothing was collected: " + "; ".join(refused) + " (only deleted runs and "
                "experiments, deleted long enough ago for older_than, can be collected)"
            )
        if not run_ids and not experiment_ids:
            plan.run_ids = self._store.deleted_run_ids(older_ms)
            plan.experiment_ids = self._store.deleted_experiment_ids(older_ms)
        elif not experiment_ids:
            # Named runs only: their experiments go too if deleted and left without runs.
            deleted = set(self._store.deleted_experiment_ids(older_ms))
            plan.experiment_ids = sorted(plan.parents & deleted)
        if plan.experiment_ids:
            # Every deleted run of a collected experiment goes, whatever its age (as in MLflow).
            extra = self._store.deleted_run_ids(None, plan.experiment_ids)
            plan.run_ids = list(dict.fromkeys([*plan.run_ids, *extra]))
        return plan

    def _check_runs(self, plan: _Plan, run_ids: Sequence[str], threshold: int | None) -> list[str]:
        refused = []
        for run_id in dict.fromkeys(check_run_id(r) for r in run_ids):
            try:
                run = self._store.get_run(run_id)
            except NotFound:
                plan.missing.append(_gone(_RUN, run_id))
                continue
            if run.lifecycle_stage != DELETED:
                refused.append(f"run {run_id} is not deleted")
            elif threshold is not None and (run.deleted_time or 0) > threshold:
                refused.append(f"run {run_id} was deleted too recently")
            else:
                plan.run_ids.append(run_id)
                plan.parents.add(int(run.experiment_id))
        return refused

    def _check_experiments(
        self, plan: _Plan, experiment_ids: Sequence[str], threshold: int | None
    ) -> list[str]:
        refused = []
        for number in dict.fromkeys(check_experiment_id(e) for e in experiment_ids):
            try:
                experiment = self._store.get_experiment(str(number))
            except NotFound:
                plan.missing.append(_gone(_EXPERIMENT, str(number)))
                continue
            if experiment.lifecycle_stage != DELETED:
                refused.append(f"experiment {number} is not deleted")
            elif threshold is not None and experiment.last_update_time > threshold:
                refused.append(f"experiment {number} was deleted too recently")
            else:
                plan.experiment_ids.append(number)
        return refused

    # -- collecting --------------------------------------------------------------------------

    def _collect_run(self, run_id: str, dry_run: bool) -> rpb.GarbageEvent:
        return self._collect(
            _RUN,
            run_id,
            dry_run,
            peek=lambda: self._store.get_run(run_id).artifact_uri,
            claim=lambda: self._store.claim_run(run_id),
            location_of=lambda run: run.artifact_uri,
        )

    def _collect_experiment(self, experiment_id: int, dry_run: bool) -> rpb.GarbageEvent:
        return self._collect(
            _EXPERIMENT,
            str(experiment_id),
            dry_run,
            peek=lambda: self._store.get_experiment(str(experiment_id)).artifact_location,
            claim=lambda: self._store.claim_experiment(experiment_id),
            location_of=lambda experiment: experiment.artifact_location,
            busy="or it still has runs",
        )

    def _collect(
        self,
        kind: rpb.GarbageKind.ValueType,
        ident: str,
        dry_run: bool,
        *,
        peek: Callable[[], str],
        claim: Callable[[], AbstractContextManager[_Claimed | None]],
        location_of: Callable[[_Claimed], str],
        busy: str = "",
    ) -> rpb.GarbageEvent:
        """Deletes one claimed record's location, then (on leaving the claim) the record."""
        if dry_run:
            try:
                return _event(kind, ident, peek(), rpb.GARBAGE_OUTCOME_WOULD_COLLECT)
            except NotFound:
                return _gone(kind, ident)
        uri = ""
        try:
            if kind == _RUN and self._direct is not None and self._still_deleted(ident):
                # Parts of unfinished uploads go first, before the run's claim: on SQLite the
                # claim holds the database's only write lock, and each session's abort takes it
                # too, from a transaction of its own that would wait for the claim's forever. A
                # deleted run takes no new uploads, and its sessions' claims keep two
                # collectors from aborting one twice.
                self._direct.abort_run(ident)
            with claim() as claimed:
                if claimed is None:
                    return _taken(kind, ident, busy)
                uri = location_of(claimed)
                self._delete(uri, run_folder_of=ident if kind == _RUN else "")
        except (ArtifactError, OSError) as exc:
            return _failure(kind, ident, uri, exc)
        except Exception as exc:
            log.exception("collecting %s %s failed", _KIND_NAMES[kind], ident)
            return _failure(kind, ident, uri, exc)
        log.info("collected %s %s (%s)", _KIND_NAMES[kind], ident, uri)
        return _event(kind, ident, uri, rpb.GARBAGE_OUTCOME_COLLECTED)

    def _still_deleted(self, run_id: str) -> bool:
        """Whether the run is still deleted (not restored since it was planned, nor gone)."""
        try:
            return self._store.get_run(run_id).lifecycle_stage == DELETED
        except NotFound:
            return False

    def _delete(self, uri: str, run_folder_of: str = "") -> None:
        """Deletes a location inside the roots: a run's `<run_id>/artifacts` takes its folder."""
        location = self._roots.locate(uri)
        path = location.path
        if run_folder_of and path.parts[-2:] == (run_folder_of, "artifacts"):
            path = ArtifactPath(path.parts[:-1])
        if path.is_root:
            raise FailedPrecondition(f"{uri!r} is an artifact root; refusing to empty it")
        location.storage.delete(path)


def _event(
    kind: rpb.GarbageKind.ValueType,
    ident: str,
    uri: str,
    outcome: rpb.GarbageOutcome.ValueType,
    message: str = "",
) -> rpb.GarbageEvent:
    return rpb.GarbageEvent(kind=kind, id=ident, artifact_uri=uri, outcome=outcome, message=message)


def _gone(kind: rpb.GarbageKind.ValueType, ident: str) -> rpb.GarbageEvent:
    return _event(kind, ident, "", rpb.GARBAGE_OUTCOME_SKIPPED, "not found (already collected?)")


def _taken(kind: rpb.GarbageKind.ValueType, ident: str, extra: str = "") -> rpb.GarbageEvent:
    message = "already collected, restored, or being collected by another collector"
    return _event(kind, ident, "", rpb.GARBAGE_OUTCOME_SKIPPED, f"{message} {extra}".strip())


def _failure(
    kind: rpb.GarbageKind.ValueType, ident: str, uri: str, exc: Exception
) -> rpb.GarbageEvent:
    reason = exc.message if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {exc}"
    return _event(
        kind, ident, uri, rpb.GARBAGE_OUTCOME_FAILED, f"{reason}; its record was kept, retry later"
    )


def _tally(summary: rpb.GarbageSummary, event: rpb.GarbageEvent) -> rpb.CollectGarbageResponse:
    if event.outcome in (rpb.GARBAGE_OUTCOME_COLLECTED, rpb.GARBAGE_OUTCOME_WOULD_COLLECT):
        if event.kind == _RUN:
            summary.runs_collected += 1
        else:
            summary.experiments_collected += 1
    elif event.outcome == rpb.GARBAGE_OUTCOME_SKIPPED:
        summary.skipped += 1
    else:
        summary.failed += 1
    return rpb.CollectGarbageResponse(item=event)


@contextmanager
def local_collector(
    backend_store_uri: str, artifact_roots: list[str], *, fsync: bool = True
) -> Iterator[GarbageCollector]:
    """A collector on a store and roots opened here (and closed after), as `artifactd gc`
    without a server uses it; replicas and other such collectors may run at the same time."""
    from artifactd_server.storage import open_storage
    from artifactd_server.store.database import open_database

    database = open_database(backend_store_uri)
    storages = [open_storage(root, fsync=fsync) for root in artifact_roots]
    try:
        store, roots = TrackingStore(database), ArtifactRoots(storages)
        direct = DirectUploads(Scopes(roots, store), UploadSessions(database), Settings())
        yield GarbageCollector(store, roots, direct)
    finally:
        for storage in storages:
            storage.close()
        database.close()


def run_garbage_collection(
    backend_store_uri: str,
    artifact_roots: list[str],
    *,
    older_than: float | None,
    run_ids: list[str],
    experiment_ids: list[str],
    dry_run: bool,
    fsync: bool = True,
) -> Iterator[rpb.CollectGarbageResponse]:
    """`artifactd gc` without a server: the same collection on a store and roots opened here."""
    with local_collector(backend_store_uri, artifact_roots, fsync=fsync) as collector:
        yield from collector.collect(
            older_than=older_than, run_ids=run_ids, experiment_ids=experiment_ids, dry_run=dry_run
        )
