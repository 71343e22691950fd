"""RunService and run-scoped artifact RPCs over gRPC, on SQLite, PostgreSQL and MariaDB servers."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import grpc
import pytest

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc

from run_fixtures import code_of, get, new_experiment, new_run, put
from servers import ServerProcess, start_server


def test_experiment_lifecycle(runs: rpb_grpc.RunServiceStub, store_server: ServerProcess) -> None:
    experiment = new_experiment(runs)
    assert experiment.experiment_id.isdigit()
    assert experiment.lifecycle_stage == rpb.LIFECYCLE_STAGE_ACTIVE
    root_uri = f"file://{store_server.root.resolve()}"
    assert experiment.artifact_location == f"{root_uri}/{experiment.experiment_id}"
    by_name = runs.GetExperiment(rpb.GetExperimentRequest(name=experiment.name), timeout=10)
    assert by_name.experiment == experiment
    assert code_of(lambda: runs.CreateExperiment(
        rpb.CreateExperimentRequest(name=experiment.name), timeout=10
    )) == grpc.StatusCode.ALREADY_EXISTS  # fmt: skip
    assert code_of(lambda: runs.GetExperiment(
        rpb.GetExperimentRequest(experiment_id="999999999"), timeout=10
    )) == grpc.StatusCode.NOT_FOUND  # fmt: skip
    assert code_of(lambda: runs.GetExperiment(
        rpb.GetExperimentRequest(experiment_id="1; drop table"), timeout=10
    )) == grpc.StatusCode.INVALID_ARGUMENT  # fmt: skip

    run = new_run(runs, experiment.experiment_id)
    runs.DeleteExperiment(rpb.DeleteExperimentRequest(experiment_id=experiment.experiment_id))
    got = runs.GetRun(rpb.GetRunRequest(run_id=run.run_id), timeout=10).run
    assert got.lifecycle_stage == rpb.LIFECYCLE_STAGE_DELETED
    assert got.deleted_time > 0
    assert code_of(lambda: new_run(runs, experiment.experiment_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    listed = runs.ListExperiments(
        rpb.ListExperimentsRequest(view_type=rpb.VIEW_TYPE_DELETED_ONLY, page_size=10000)
    ).experiments
    assert experiment.experiment_id in {e.experiment_id for e in listed}
    runs.RestoreExperiment(rpb.RestoreExperimentRequest(experiment_id=experiment.experiment_id))
    got = runs.GetRun(rpb.GetRunRequest(run_id=run.run_id), timeout=10).run
    assert got.lifecycle_stage == rpb.LIFECYCLE_STAGE_ACTIVE
    assert got.deleted_time == 0


def test_runs_are_listed_newest_first_in_pages(runs: rpb_grpc.RunServiceStub) -> None:
    experiment = new_experiment(runs)
    made = [
        runs.CreateRun(
            rpb.CreateRunRequest(experiment_id=experiment.experiment_id, start_time=1000 + i)
        ).run.run_id
        for i in range(7)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = runs.ListRuns(
            rpb.ListRunsRequest(
                experiment_ids=[experiment.experiment_id], page_size=3, page_token=token
            )
        )
        seen += [r.run_id for r in reply.runs]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == list(reversed(made))
    assert pages == 3
    other = new_experiment(runs)
    assert code_of(lambda: runs.ListRuns(
        rpb.ListRunsRequest(experiment_ids=[other.experiment_id], page_token=token or "x")
    )) == grpc.StatusCode.INVALID_ARGUMENT  # fmt: skip


def test_run_scoped_artifacts(
    runs: rpb_grpc.RunServiceStub,
    artifacts: pb_grpc.ArtifactServiceStub,
    store_server: ServerProcess,
) -> None:
    experiment = new_experiment(runs)
    run = new_run(runs, experiment.experiment_id)
    assert run.artifact_uri == f"{experiment.artifact_location}/{run.run_id}/artifacts"
    empty = artifacts.ListArtifacts(pb.ListArtifactsRequest(run_id=run.run_id), timeout=10)
    assert list(empty.files) == []  # nothing logged yet: an empty root, not NOT_FOUND

    info = put(artifacts, "model/weights.bin", b"weights", run.run_id)
    assert info.path == "model/weights.bin"  # relative to the run's root
    on_disk = (
        store_server.root / experiment.experiment_id / run.run_id / "artifacts" / "model"
        / "weights.bin"
    )  # fmt: skip
    assert on_disk.read_bytes() == b"weights"
    assert get(artifacts, "model/weights.bin", run.run_id) == b"weights"
    listed = artifacts.ListArtifacts(
        pb.ListArtifactsRequest(run_id=run.run_id, recursive=True), timeout=10
    )
    assert [(f.path, f.is_dir) for f in listed.files] == [
        ("model", True), ("model/weights.bin", False)
    ]  # fmt: skip
    tree = list(artifacts.DownloadArtifacts(pb.DownloadArtifactsRequest(run_id=run.run_id)))
    assert [m.file.path for m in tree if m.HasField("file")] == ["model", "model/weights.bin"]
    stat = artifacts.GetArtifact(pb.GetArtifactRequest(path="model", run_id=run.run_id))
    assert stat.file.is_dir

    # Deleted: readable until GC, never writable or deletable.
    runs.DeleteRun(rpb.DeleteRunRequest(run_id=run.run_id))
    assert get(artifacts, "model/weights.bin", run.run_id) == b"weights"
    assert code_of(lambda: put(artifacts, "more.bin", b"x", run.run_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert code_of(lambda: artifacts.DeleteArtifacts(
        pb.DeleteArtifactsRequest(path="model", run_id=run.run_id)
    )) == grpc.StatusCode.FAILED_PRECONDITION  # fmt: skip
    # ...not even by spelling the run's folder out as a plain path.
    plain = f"{experiment.experiment_id}/{run.run_id}/artifacts/sneaky.bin"
    assert code_of(lambda: put(artifacts, plain, b"x")) == grpc.StatusCode.FAILED_PRECONDITION
    batch = artifacts.LogArtifacts(iter([
        pb.LogArtifactsRequest(header=pb.UploadHeader(path="a.bin", run_id=run.run_id)),
        pb.LogArtifactsRequest(data=b"a", finish=pb.UploadFinish()),
    ]), timeout=10)  # fmt: skip
    assert batch.results[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert on_disk.read_bytes() == b"weights"

    runs.RestoreRun(rpb.RestoreRunRequest(run_id=run.run_id))
    put(artifacts, "more.bin", b"more", run.run_id)
    gone = artifacts.DeleteArtifacts(pb.DeleteArtifactsRequest(path="", run_id=run.run_id))
    assert gone.existed  # a run's whole artifact root can be deleted...
    assert not (store_server.root / experiment.experiment_id / run.run_id / "artifacts").exists()
    assert store_server.root.is_dir()  # ...the server's root cannot be reached that way


def test_run_scoped_paths_cannot_leave_the_run(
    runs: rpb_grpc.RunServiceStub, artifacts: pb_grpc.ArtifactServiceStub
) -> None:
    run = new_run(runs, new_experiment(runs).experiment_id)
    for path in ("../other", "..%2Fother", "/etc/passwd", "a/../../b", "%2e%2e/x"):
        assert code_of(lambda p=path: put(artifacts, p, b"x", run.run_id)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        ), path
    for bad in ("not-a-run", "A" * 32, "../" + "0" * 29):
        assert code_of(lambda b=bad: get(artifacts, "x", b)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: get(artifacts, "x", uuid.uuid4().hex)) == grpc.StatusCode.NOT_FOUND


def test_caller_chosen_locations_stay_inside_the_roots(
    runs: rpb_grpc.RunServiceStub,
    artifacts: pb_grpc.ArtifactServiceStub,
    store_server: ServerProcess,
    tmp_path: Path,
) -> None:
    root = store_server.root.resolve()
    extra = (store_server.root.parent / "extra-root").resolve()
    name = f"chosen-{uuid.uuid4().hex[:8]}"
    relative = new_experiment(runs, f"teams/{name}")
    assert relative.artifact_location == f"file://{root}/teams/{name}"
    absolute = new_experiment(runs, f"{extra}/{name}")
    assert absolute.artifact_location == f"file://{extra}/{name}"
    run = new_run(runs, absolute.experiment_id)
    put(artifacts, "f.txt", b"in the extra root", run.run_id)
    assert (extra / name / run.run_id / "artifacts" / "f.txt").read_bytes() == b"in the extra root"

    refused = {
        str(tmp_path / "elsewhere"): grpc.StatusCode.PERMISSION_DENIED,
        f"file://{tmp_path}/elsewhere": grpc.StatusCode.PERMISSION_DENIED,
        f"file://{root}/../escape": grpc.StatusCode.PERMISSION_DENIED,
        f"file://{root}x/sibling": grpc.StatusCode.PERMISSION_DENIED,  # prefix is not a parent
        "s3://attacker-bucket/x": grpc.StatusCode.PERMISSION_DENIED,
        "http://169.254.169.254/latest/meta-data": grpc.StatusCode.PERMISSION_DENIED,
        "file://otherhost/etc": grpc.StatusCode.PERMISSION_DENIED,
        f"file://{root}": grpc.StatusCode.PERMISSION_DENIED,  # a root itself
        str(extra): grpc.StatusCode.PERMISSION_DENIED,
        "../up": grpc.StatusCode.INVALID_ARGUMENT,
        "file:/etc/passwd": grpc.StatusCode.INVALID_ARGUMENT,
        "runs:/0123456789abcdef0123456789abcdef/x": grpc.StatusCode.INVALID_ARGUMENT,
        "C:/Windows": grpc.StatusCode.INVALID_ARGUMENT,
        "%2e%2e/up": grpc.StatusCode.INVALID_ARGUMENT,
        f"file://{root}/%2e%2e/escape": grpc.StatusCode.PERMISSION_DENIED,
        f"file://{root}//double": grpc.StatusCode.PERMISSION_DENIED,
        "12/mine": grpc.StatusCode.PERMISSION_DENIED,  # where default locations live
        f"teams/{name}": grpc.StatusCode.FAILED_PRECONDITION,  # taken
        f"teams/{name}/inner": grpc.StatusCode.FAILED_PRECONDITION,  # inside another
        "teams": grpc.StatusCode.FAILED_PRECONDITION,  # contains another
    }
    for location, code in refused.items():
        assert code_of(lambda loc=location: new_experiment(runs, loc)) == code, location
    new_experiment(runs, f"teams/{name}x")  # a sibling with a common prefix is fine
    assert not (tmp_path / "elsewhere").exists()


def test_bad_requests_are_invalid_argument(runs: rpb_grpc.RunServiceStub) -> None:
    calls = [
        lambda: runs.CreateExperiment(rpb.CreateExperimentRequest(name="  "), timeout=10),
        lambda: runs.GetExperiment(rpb.GetExperimentRequest(), timeout=10),
        lambda: runs.GetRun(rpb.GetRunRequest(run_id="nope"), timeout=10),
        lambda: runs.ListRuns(rpb.ListRunsRequest(page_size=-1), timeout=10),
        lambda: runs.ListExperiments(rpb.ListExperimentsRequest(page_token="garbage!"), timeout=10),
        lambda: runs.ListRuns(rpb.ListRunsRequest(experiment_ids=["x"]), timeout=10),
        lambda: runs.CollectGarbage(rpb.CollectGarbageRequest(run_ids=["zz"]), timeout=10),
        lambda: runs.CollectGarbage(rpb.CollectGarbageRequest(older_than_seconds=-1), timeout=10),
    ]
    for index, call in enumerate(calls):
        assert code_of(call) == grpc.StatusCode.INVALID_ARGUMENT, index


def test_run_updates(runs: rpb_grpc.RunServiceStub) -> None:
    run = new_run(runs, new_experiment(runs).experiment_id)
    assert run.status == rpb.RUN_STATUS_RUNNING
    done = runs.UpdateRun(
        rpb.UpdateRunRequest(run_id=run.run_id, status=rpb.RUN_STATUS_FINISHED, end_time=42)
    ).run
    assert (done.status, done.end_time) == (rpb.RUN_STATUS_FINISHED, 42)
    runs.DeleteRun(rpb.DeleteRunRequest(run_id=run.run_id))
    assert code_of(lambda: runs.DeleteRun(rpb.DeleteRunRequest(run_id=run.run_id))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert code_of(lambda: runs.UpdateRun(
        rpb.UpdateRunRequest(run_id=run.run_id, status=rpb.RUN_STATUS_FAILED)
    )) == grpc.StatusCode.FAILED_PRECONDITION  # fmt: skip


def test_server_refuses_a_store_migrated_by_a_newer_artifactd(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    first = start_server(tmp_path / "root", tmp_path / "run", "--backend-store-uri", uri)
    assert first.stop() == 0  # a new database: migrated on first start
    with sqlite3.connect(tmp_path / "store.db") as db:
        (revision,) = db.execute("SELECT version_num FROM artifactd_schema_version").fetchone()
        assert revision
        db.execute("UPDATE artifactd_schema_version SET version_num = 'f00dfeed'")
    with pytest.raises(RuntimeError) as err:
        start_server(tmp_path / "root", tmp_path / "run", "--backend-store-uri", uri)
    assert "newer artifactd" in str(err.value)
    assert "Traceback" not in str(err.value)
