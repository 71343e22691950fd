"""TrackingClient: experiments, runs, their lifecycle and garbage collection on an artifactd server.

The names and semantics follow MLflow's `MlflowClient` where they make sense: ids are strings,
times are milliseconds since the Unix epoch, lifecycle stages are `"active"` / `"deleted"`, run
statuses are `"RUNNING"`, `"FINISHED"`, ... and deleting is soft until garbage collection. Reads
(get, list) are retried with backoff while the server is UNAVAILABLE; calls that change state are
sent once. Artifacts of a run are read and written with `ArtifactClient(..., run_id=...)` or
`runs:/<run_id>/<path>` URIs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from artifactd.client.rpc import Connection
from artifactd.client.settings import ClientSettings
from artifactd.protocol.errors import InvalidArgument, NotFound
from artifactd.protocol.ids import check_run_id
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc

T = TypeVar("T")

VIEW_TYPES = ("active_only", "deleted_only", "all")
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")

_VIEW_TYPE = {
    "active_only": rpb.VIEW_TYPE_ACTIVE_ONLY,
    "deleted_only": rpb.VIEW_TYPE_DELETED_ONLY,
    "all": rpb.VIEW_TYPE_ALL,
}
_STAGE = {rpb.LIFECYCLE_STAGE_ACTIVE: "active", rpb.LIFECYCLE_STAGE_DELETED: "deleted"}
_STATUS = {
    "RUNNING": rpb.RUN_STATUS_RUNNING,
    "SCHEDULED": rpb.RUN_STATUS_SCHEDULED,
    "FINISHED": rpb.RUN_STATUS_FINISHED,
    "FAILED": rpb.RUN_STATUS_FAILED,
    "KILLED": rpb.RUN_STATUS_KILLED,
}
_STATUS_NAME = {value: name for name, value in _STATUS.items()}
_KIND = {rpb.GARBAGE_KIND_RUN: "run", rpb.GARBAGE_KIND_EXPERIMENT: "experiment"}
_OUTCOME = {
    rpb.GARBAGE_OUTCOME_COLLECTED: "collected",
    rpb.GARBAGE_OUTCOME_WOULD_COLLECT: "would_collect",
    rpb.GARBAGE_OUTCOME_SKIPPED: "skipped",
    rpb.GARBAGE_OUTCOME_FAILED: "failed",
}

ViewType = Literal["active_only", "deleted_only", "all"]


@dataclass(frozen=True)
class Experiment:
    """An experiment; times in milliseconds since the Unix epoch."""

    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int

    @classmethod
    def from_proto(cls, message: rpb.Experiment) -> Experiment:
        return cls(
            experiment_id=message.experiment_id,
            name=message.name,
            artifact_location=message.artifact_location,
            lifecycle_stage=_STAGE.get(message.lifecycle_stage, "unknown"),
            creation_time=message.creation_time,
            last_update_time=message.last_update_time,
        )


@dataclass(frozen=True)
class Run:
    """A run; times in milliseconds since the Unix epoch, `None` when not set."""

    run_id: str
    experiment_id: str
    run_name: str
    artifact_uri: str
    lifecycle_stage: str
    status: str
    start_time: int
    end_time: int | None
    deleted_time: int | None

    @classmethod
    def from_proto(cls, message: rpb.Run) -> Run:
        return cls(
            run_id=message.run_id,
            experiment_id=message.experiment_id,
            run_name=message.run_name,
            artifact_uri=message.artifact_uri,
            lifecycle_stage=_STAGE.get(message.lifecycle_stage, "unknown"),
            status=_STATUS_NAME.get(message.status, "UNKNOWN"),
            start_time=message.start_time,
            end_time=message.end_time or None,
            deleted_time=message.deleted_time or None,
        )


@dataclass(frozen=True)
class GarbageEvent:
    """One run or experiment handled by garbage collection.

    `kind` is `"run"` or `"experiment"`; `outcome` is `"collected"`, `"would_collect"` (dry
    run), `"skipped"` (already gone, or restored meanwhile) or `"failed"` (see `message`; the
    record is kept so a later collection retries it).
    """

    kind: str
    id: str
    artifact_uri: str
    outcome: str
    message: str

    @classmethod
    def from_proto(cls, message: rpb.GarbageEvent) -> GarbageEvent:
        return cls(
            kind=_KIND.get(message.kind, "unknown"),
            id=message.id,
            artifact_uri=message.artifact_uri,
            outcome=_OUTCOME.get(message.outcome, "unknown"),
            message=message.message,
        )


@dataclass(frozen=True)
class GarbageSummary:
    """The totals of one garbage collection; it always comes last."""

    runs_collected: int
    experiments_collected: int
    skipped: int
    failed: int
    dry_run: bool

    @classmethod
    def from_proto(cls, message: rpb.GarbageSummary) -> GarbageSummary:
        return cls(
            runs_collected=message.runs_collected,
            experiments_collected=message.experiments_collected,
            skipped=message.skipped,
            failed=message.failed,
            dry_run=message.dry_run,
        )


def garbage_item(message: rpb.CollectGarbageResponse) -> GarbageEvent | GarbageSummary:
    """The event or the summary a CollectGarbage message carries."""
    which = message.WhichOneof("event")
    if which == "item":
        return GarbageEvent.from_proto(message.item)
    if which == "summary":
        return GarbageSummary.from_proto(message.summary)
    raise InvalidArgument("a garbage collection message carried neither an event nor a summary")


class TrackingClient(Connection):
    """Experiments and runs on one artifactd server; use it as a context manager or `close` it."""

    def __init__(
        self,
        target: str | None = None,
        *,
        settings: ClientSettings | None = None,
        strict_env: bool | None = None,
    ) -> None:
        super().__init__(target, settings=settings, strict_env=strict_env)
        self._stub = rpb_grpc.RunServiceStub(self._channel)

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(self, name: str, artifact_location: str | None = None) -> Experiment:
        """Creates an experiment; its artifacts go to `artifact_location` (a location inside
        one of the server's artifact roots) or, by default, to `<default root>/<id>`."""
        request = rpb.CreateExperimentRequest(name=name, artifact_location=artifact_location or "")
        return Experiment.from_proto(
            self._unary_once(self._stub.CreateExperiment, request).experiment
        )

    def get_experiment(self, experiment_id: str | int) -> Experiment:
        """The experiment; `artifactd.protocol.errors.NotFound` when there is none."""
        request = rpb.GetExperimentRequest(experiment_id=_experiment_id(experiment_id))
        return Experiment.from_proto(self._unary(self._stub.GetExperiment, request).experiment)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment named `name`, deleted ones included; `None` when there is none
        (as in MLflow)."""
        if not name:
            raise InvalidArgument("an experiment name is required")
        try:
            response = self._unary(self._stub.GetExperiment, rpb.GetExperimentRequest(name=name))
        except NotFound:
            return None
        return Experiment.from_proto(response.experiment)

    def list_experiments(
        self, view_type: ViewType | str = "active_only", *, page_size: int = 0
    ) -> list[Experiment]:
        """Every experiment in `view_type` (`active_only`, `deleted_only` or `all`), by id."""
        view = _view_type(view_type)

        def page(token: str) -> tuple[Iterable[Experiment], str]:
            request = rpb.ListExperimentsRequest(
                view_type=view, page_size=page_size, page_token=token
            )
            response = self._unary(self._stub.ListExperiments, request)
            return map(Experiment.from_proto, response.experiments), response.next_page_token

        return list(_pages(page))

    def delete_experiment(self, experiment_id: str | int) -> Experiment:
        """Soft-deletes the experiment and its active runs; artifacts stay until collected."""
        request = rpb.DeleteExperimentRequest(experiment_id=_experiment_id(experiment_id))
        return Experiment.from_proto(
            self._unary_once(self._stub.DeleteExperiment, request).experiment
        )

    def restore_experiment(self, experiment_id: str | int) -> Experiment:
        """Undoes `delete_experiment`, for the experiment and the runs it deleted."""
        request = rpb.RestoreExperimentRequest(experiment_id=_experiment_id(experiment_id))
        return Experiment.from_proto(
            self._unary_once(self._stub.RestoreExperiment, request).experiment
        )

    # -- runs --------------------------------------------------------------------------------

    def create_run(
        self, experiment_id: str | int, run_name: str | None = None, start_time: int | None = None
    ) -> Run:
        """Starts a run (status RUNNING); `start_time` in milliseconds, default now."""
        if start_time is not None and start_time <= 0:
            raise InvalidArgument(f"start_time must be positive milliseconds, got {start_time}")
        request = rpb.CreateRunRequest(
            experiment_id=_experiment_id(experiment_id),
            run_name=run_name or "",
            start_time=start_time or 0,
        )
        return Run.from_proto(self._unary_once(self._stub.CreateRun, request).run)

    def get_run(self, run_id: str) -> Run:
        """The run; `artifactd.protocol.errors.NotFound` when there is none."""
        request = rpb.GetRunRequest(run_id=check_run_id(run_id))
        return Run.from_proto(self._unary(self._stub.GetRun, request).run)

    def list_runs(
        self,
        experiment_ids: Iterable[str | int] = (),
        view_type: ViewType | str = "active_only",
        *,
        page_size: int = 0,
    ) -> list[Run]:
        """Every run of `experiment_ids` (of all experiments when empty) in `view_type`,
        newest first."""
        if isinstance(experiment_ids, str | int):
            experiment_ids = [experiment_ids]
        ids = [_experiment_id(e) for e in experiment_ids]
        view = _view_type(view_type)

        def page(token: str) -> tuple[Iterable[Run], str]:
            request = rpb.ListRunsRequest(
                experiment_ids=ids, view_type=view, page_size=page_size, page_token=token
            )
            response = self._unary(self._stub.ListRuns, request)
            return map(Run.from_proto, response.runs), response.next_page_token

        return list(_pages(page))

    def update_run(
        self,
        run_id: str,
        status: str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> Run:
        """Changes the status, end time (milliseconds) or name of a run; `None` leaves it."""
        request = rpb.UpdateRunRequest(
            run_id=check_run_id(run_id),
            status=_status(status) if status is not None else rpb.RUN_STATUS_UNSPECIFIED,
            end_time=_end_time(end_time),
            run_name=run_name or "",
        )
        return Run.from_proto(self._unary_once(self._stub.UpdateRun, request).run)

    def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> Run:
        """Ends a run as FINISHED, FAILED or KILLED, at `end_time` (milliseconds; default now)."""
        if status.upper() not in TERMINAL_STATUSES:
            raise InvalidArgument(
                f"a run ends as one of {', '.join(TERMINAL_STATUSES)}, not {status!r}"
            )
        ended = end_time if end_time is not None else time.time_ns() // 1_000_000
        return self.update_run(run_id, status=status, end_time=ended)

    def delete_run(self, run_id: str) -> Run:
        """Soft-deletes a run: its artifacts stay readable but can no longer be written."""
        request = rpb.DeleteRunRequest(run_id=check_run_id(run_id))
        return Run.from_proto(self._unary_once(self._stub.DeleteRun, request).run)

    def restore_run(self, run_id: str) -> Run:
        request = rpb.RestoreRunRequest(run_id=check_run_id(run_id))
        return Run.from_proto(self._unary_once(self._stub.RestoreRun, request).run)

    # -- garbage collection ------------------------------------------------------------------

    def collect_garbage(
        self,
        older_than: float | None = None,
        run_ids: Iterable[str] = (),
        experiment_ids: Iterable[str | int] = (),
        dry_run: bool = False,
    ) -> Iterator[GarbageEvent | GarbageSummary]:
        """Removes the artifacts, then the records, of deleted runs and experiments.

        `older_than` (seconds) keeps those deleted more recently; `run_ids` / `experiment_ids`
        restrict it to those (each must be deleted). Yields one `GarbageEvent` per run or
        experiment handled, then one `GarbageSummary`. The call runs under the transfer
        deadline (`MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT`, none by default) and is not
        repeated when the server is unavailable.
        """
        if older_than is not None and older_than < 0:
            raise InvalidArgument(f"older_than must be 0 or more seconds, got {older_than}")
        if isinstance(run_ids, str):
            run_ids = [run_ids]
        if isinstance(experiment_ids, str | int):
            experiment_ids = [experiment_ids]
        request = rpb.CollectGarbageRequest(
            run_ids=[check_run_id(r) for r in run_ids],
            experiment_ids=[_experiment_id(e) for e in experiment_ids],
            dry_run=dry_run,
        )
        if older_than is not None:
            request.older_than_seconds = float(older_than)
        return self._collect(request)

    def _collect(
        self, request: rpb.CollectGarbageRequest
    ) -> Iterator[GarbageEvent | GarbageSummary]:
        stream = self._stub.CollectGarbage(request, timeout=self.settings.transfer_timeout)
        for message in self._stream_once(stream):
            yield garbage_item(message)


def _pages(fetch: Callable[[str], tuple[Iterable[T], str]]) -> Iterator[T]:
    token = ""
    while True:
        items, token = fetch(token)
        yield from items
        if not token:
            return


def _experiment_id(experiment_id: str | int) -> str:
    text = str(experiment_id)
    if not text.isascii() or not text.isdigit():
        raise InvalidArgument(
            f"experiment id {text!r} is not an experiment id: experiment ids are decimal digits"
        )
    return text


def _view_type(view_type: str) -> rpb.ViewType.ValueType:
    key = view_type.strip().lower().replace("-", "_")
    if key not in _VIEW_TYPE:
        raise InvalidArgument(f"view type {view_type!r} is not one of {', '.join(VIEW_TYPES)}")
    return _VIEW_TYPE[key]


def _status(status: str) -> rpb.RunStatus.ValueType:
    key = status.strip().upper()
    if key not in _STATUS:
        raise InvalidArgument(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
    return _STATUS[key]


def _end_time(end_time: int | None) -> int:
    if end_time is None:
        return 0
    if end_time <= 0:
        raise InvalidArgument(f"end_time must be positive milliseconds, got {end_time}")
    return end_time
