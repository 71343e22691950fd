"""RunService: translates between protobuf messages and the tracking store and collector."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from artifactd.protocol.errors import InvalidArgument
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc
from artifactd_server.api import paging
from artifactd_server.api.status import InFlight, translate_errors
from artifactd_server.domain import identity, limits
from artifactd_server.domain.gc import GarbageCollector
from artifactd_server.domain.multipart import DirectUploads
from artifactd_server.domain.policy import readable_experiments
from artifactd_server.domain.roots import ArtifactRoots
from artifactd_server.store.schema import ACTIVE
from artifactd_server.store.tracking import MAX_EXPERIMENT_ID, Experiment, Run, TrackingStore

_VIEW_TYPES = {
    rpb.VIEW_TYPE_UNSPECIFIED: "active_only",
    rpb.VIEW_TYPE_ACTIVE_ONLY: "active_only",
    rpb.VIEW_TYPE_DELETED_ONLY: "deleted_only",
    rpb.VIEW_TYPE_ALL: "all",
}
_STATUSES = {
    rpb.RUN_STATUS_RUNNING: "RUNNING",
    rpb.RUN_STATUS_SCHEDULED: "SCHEDULED",
    rpb.RUN_STATUS_FINISHED: "FINISHED",
    rpb.RUN_STATUS_FAILED: "FAILED",
    rpb.RUN_STATUS_KILLED: "KILLED",
}
_STATUS_VALUES = {name: value for value, name in _STATUSES.items()}


def _stage(stage: str) -> rpb.LifecycleStage.ValueType:
    return rpb.LIFECYCLE_STAGE_ACTIVE if stage == ACTIVE else rpb.LIFECYCLE_STAGE_DELETED


def experiment_message(experiment: Experiment) -> rpb.Experiment:
    return rpb.Experiment(
        experiment_id=experiment.experiment_id,
        name=experiment.name,
        artifact_location=experiment.artifact_location,
        lifecycle_stage=_stage(experiment.lifecycle_stage),
        creation_time=experiment.creation_time,
        last_update_time=experiment.last_update_time,
    )


def run_message(run: Run) -> rpb.Run:
    return rpb.Run(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        run_name=run.run_name,
        artifact_uri=run.artifact_uri,
        lifecycle_stage=_stage(run.lifecycle_stage),
        status=_STATUS_VALUES.get(run.status, rpb.RUN_STATUS_UNSPECIFIED),
        start_time=run.start_time,
        end_time=run.end_time or 0,
        deleted_time=run.deleted_time or 0,
    )


def _view_type(value: int) -> str:
    try:
        return _VIEW_TYPES[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(f"unknown view_type {value}") from None


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument(f"page_size must not be negative, got {value}")
    return min(value or limits.DEFAULT_PAGE_SIZE, limits.MAX_PAGE_SIZE)


_Item = TypeVar("_Item")


def _page(
    found: list[_Item], size: int, listing: list[Any], position: Callable[[_Item], list[Any]]
) -> tuple[list[_Item], str]:
    """The page (`found` holds one row more than fits when there is a next page) and its token."""
    if len(found) <= size:
        return found, ""
    page = found[:size]
    return page, paging.encode_cursor(listing, position(page[-1]))


class RunServicer(rpb_grpc.RunServiceServicer):
    def __init__(
        self,
        store: TrackingStore,
        roots: ArtifactRoots,
        in_flight: InFlight,
        direct: DirectUploads | None = None,
    ) -> None:
        self.in_flight = in_flight  # shared with ArtifactService: a drain waits for a running GC
        self._store = store
        self._roots = roots
        self._collector = GarbageCollector(store, roots, direct)

    @translate_errors
    def CreateExperiment(  # noqa: N802 - gRPC method names
        self, request: rpb.CreateExperimentRequest, context: grpc.ServicerContext
    ) -> rpb.CreateExperimentResponse:
        location = (
            self._roots.requested_location(request.artifact_location).uri
            if request.artifact_location
            else None
        )
        experiment = self._store.create_experiment(
            request.name, location, default_parent=self._roots.default.uri
        )
        return rpb.CreateExperimentResponse(experiment=experiment_message(experiment))

    @translate_errors
    def GetExperiment(  # noqa: N802
        self, request: rpb.GetExperimentRequest, context: grpc.ServicerContext
    ) -> rpb.GetExperimentResponse:
        experiment = self._store.get_experiment(request.experiment_id, request.name)
        return rpb.GetExperimentResponse(experiment=experiment_message(experiment))

    @translate_errors
    def ListExperiments(  # noqa: N802
        self, request: rpb.ListExperimentsRequest, context: grpc.ServicerContext
    ) -> rpb.ListExperimentsResponse:
        view_type = _view_type(request.view_type)
        size = _page_size(request.page_size)
        listing = ["experiments", view_type]
        after = None
        if request.page_token:
            position = paging.decode_cursor(request.page_token, listing)
            if (
                len(position) != 1
                or not isinstance(position[0], int)
                or not (0 <= position[0] <= MAX_EXPERIMENT_ID)
            ):
                raise InvalidArgument("page_token is not one this server issued")
            after = position[0]
        visible = readable_experiments(identity.current())
        found = self._store.list_experiments(view_type, size + 1, after, visible)
        found, token = _page(found, size, listing, lambda e: [int(e.experiment_id)])
        return rpb.ListExperimentsResponse(
            experiments=[experiment_message(e) for e in found], next_page_token=token
        )

    @translate_errors
    def DeleteExperiment(  # noqa: N802
        self, request: rpb.DeleteExperimentRequest, context: grpc.ServicerContext
    ) -> rpb.DeleteExperimentResponse:
        experiment = self._store.delete_experiment(request.experiment_id)
        return rpb.DeleteExperimentResponse(experiment=experiment_message(experiment))

    @translate_errors
    def RestoreExperiment(  # noqa: N802
        self, request: rpb.RestoreExperimentRequest, context: grpc.ServicerContext
    ) -> rpb.RestoreExperimentResponse:
        experiment = self._store.restore_experiment(request.experiment_id)
        return rpb.RestoreExperimentResponse(experiment=experiment_message(experiment))

    @translate_errors
    def CreateRun(  # noqa: N802
        self, request: rpb.CreateRunRequest, context: grpc.ServicerContext
    ) -> rpb.CreateRunResponse:
        run = self._store.create_run(request.experiment_id, request.run_name, request.start_time)
        return rpb.CreateRunResponse(run=run_message(run))

    @translate_errors
    def GetRun(  # noqa: N802
        self, request: rpb.GetRunRequest, context: grpc.ServicerContext
    ) -> rpb.GetRunResponse:
        return rpb.GetRunResponse(run=run_message(self._store.get_run(request.run_id)))

    @translate_errors
    def ListRuns(  # noqa: N802
        self, request: rpb.ListRunsRequest, context: grpc.ServicerContext
    ) -> rpb.ListRunsResponse:
        view_type = _view_type(request.view_type)
        size = _page_size(request.page_size)
        experiment_ids = sorted(set(request.experiment_ids))
        listing = ["runs", view_type, experiment_ids]
        after = None
        if request.page_token:
            position = paging.decode_cursor(request.page_token, listing)
            if (
                len(position) != 2
                or not isinstance(position[0], int)
                or not 0 <= position[0] < 2**63
                or not isinstance(position[1], str)
            ):
                raise InvalidArgument("page_token is not one this server issued")
            after = (position[0], position[1])
        if not experiment_ids:  # every run the caller may read (the policy checked named ones)
            visible = readable_experiments(identity.current())
            if visible is not None:
                if not visible:
                    return rpb.ListRunsResponse()
                experiment_ids = sorted(visible)
        found = self._store.list_runs(experiment_ids, view_type, size + 1, after)
        found, token = _page(found, size, listing, lambda r: [r.start_time, r.run_id])
        return rpb.ListRunsResponse(runs=[run_message(r) for r in found], next_page_token=token)

    @translate_errors
    def UpdateRun(  # noqa: N802
        self, request: rpb.UpdateRunRequest, context: grpc.ServicerContext
    ) -> rpb.UpdateRunResponse:
        status = None
        if request.status != rpb.RUN_STATUS_UNSPECIFIED:
            if request.status not in _STATUSES:
                raise InvalidArgument(f"unknown run status {request.status}")
            status = _STATUSES[request.status]
        run = self._store.update_run(
            request.run_id, status, request.end_time or None, request.run_name or None
        )
        return rpb.UpdateRunResponse(run=run_message(run))

    @translate_errors
    def DeleteRun(  # noqa: N802
        self, request: rpb.DeleteRunRequest, context: grpc.ServicerContext
    ) -> rpb.DeleteRunResponse:
        return rpb.DeleteRunResponse(run=run_message(self._store.delete_run(request.run_id)))

    @translate_errors
    def RestoreRun(  # noqa: N802
        self, request: rpb.RestoreRunRequest, context: grpc.ServicerContext
    ) -> rpb.RestoreRunResponse:
        return rpb.RestoreRunResponse(run=run_message(self._store.restore_run(request.run_id)))

    @translate_errors
    def CollectGarbage(  # noqa: N802
        self, request: rpb.CollectGarbageRequest, context: grpc.ServicerContext
    ) -> Iterator[rpb.CollectGarbageResponse]:
        yield from self._collector.collect(
            older_than=(
                request.older_than_seconds if request.HasField("older_than_seconds") else None
            ),
            run_ids=list(request.run_ids),
            experiment_ids=list(request.experiment_ids),
            dry_run=request.dry_run,
        )
