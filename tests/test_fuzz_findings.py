"""Defects tests/test_fuzz.py found, each kept fixed by a focused test on every backend store.

The fuzzing sends any value a field can hold; these are the values that once made the server
answer INTERNAL, written down so that a regression fails by name, not after a seeded search.
"""

from __future__ import annotations

import grpc
import pytest

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
