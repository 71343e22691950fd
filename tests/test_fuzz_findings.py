"""Defects tests/test_fuzz.py found, each kept fixed by a focused test on every backend store
(the fuzzing itself runs on one: ARTIFACTD_FUZZ_STORE).

The fuzzing sends any value a field can hold; these are the values that once made the server
answer INTERNAL, written down so that a regression fails by name, not after a seeded search.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc

from run_fixtures import new_experiment, new_run


@pytest.mark.parametrize("age", [float("inf"), 1e300, 2.0**63, 1e12], ids=str)
def test_collect_garbage_older_than_past_the_epoch_collects_nothing(
    runs: rpb_grpc.RunServiceStub, age: float
) -> None:
    """An age no deletion can have (before 1970, up to infinity) collects nothing. It crashed
    the collector: INTERNAL from int(inf), or a threshold beyond the database's 64-bit
    integers (SQLite: "Python int too large to convert to SQLite INTEGER")."""
    run = new_run(runs, new_experiment(runs).experiment_id)
    runs.DeleteRun(rpb.DeleteRunRequest(run_id=run.run_id), timeout=10)
    everything = list(runs.CollectGarbage(rpb.CollectGarbageRequest(older_than_seconds=age)))
    assert everything[-1].summary.runs_collected == 0
    named = rpb.CollectGarbageRequest(older_than_seconds=age, run_ids=[run.run_id])
    with pytest.raises(grpc.RpcError) as caught:
        list(runs.CollectGarbage(named, timeout=10))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "deleted long enough ago" in str(caught.value.details())
    reply = runs.GetRun(rpb.GetRunRequest(run_id=run.run_id), timeout=10)
    assert reply.run.lifecycle_stage == rpb.LIFECYCLE_STAGE_DELETED


def test_a_nul_in_a_name_or_upload_id_is_invalid_argument_on_every_store(
    runs: rpb_grpc.RunServiceStub, artifacts: pb_grpc.ArtifactServiceStub
) -> None:
    """PostgreSQL refuses NUL in text, so names and upload ids holding one crashed there
    (INTERNAL: psycopg DataError) while SQLite and MariaDB stored them. Now every store
    refuses them alike, before the database sees them."""
    experiment = new_experiment(runs)
    run = new_run(runs, experiment.experiment_id)
    upload = pb.UploadHeader(upload_id="\x00", offset=0)
    calls: dict[str, Callable[[], object]] = {
        "CreateExperiment": lambda: runs.CreateExperiment(
            rpb.CreateExperimentRequest(name="a\x00b"), timeout=10
        ),
        "GetExperiment": lambda: runs.GetExperiment(
            rpb.GetExperimentRequest(name="a\x00b"), timeout=10
        ),
        "CreateRun": lambda: runs.CreateRun(
            rpb.CreateRunRequest(experiment_id=experiment.experiment_id, run_name="\x00"),
            timeout=10,
        ),
        "UpdateRun": lambda: runs.UpdateRun(
            rpb.UpdateRunRequest(run_id=run.run_id, run_name="r\x00"), timeout=10
        ),
        "AbortMultipartUpload": lambda: artifacts.AbortMultipartUpload(
            pb.AbortMultipartUploadRequest(upload_id="\x00"), timeout=10
        ),
        "QueryWriteStatus": lambda: artifacts.QueryWriteStatus(
            pb.QueryWriteStatusRequest(upload_id="x\x00"), timeout=10
        ),
        "LogArtifact": lambda: artifacts.LogArtifact(
            iter([pb.LogArtifactRequest(header=upload, data=b"1", finish=pb.UploadFinish())]),
            timeout=10,
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "NUL" in str(caught.value.details()), (name, caught.value.details())
    reply = runs.GetRun(rpb.GetRunRequest(run_id=run.run_id), timeout=10)
    assert reply.run.run_name == run.run_name
