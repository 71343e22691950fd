"""Garbage collection over gRPC and without a server, on real databases and a real disk.

GC must delete exactly the deleted runs (and emptied deleted experiments) it was asked to, never
an active run's artifacts, never anything outside the artifact roots, never through a symlink;
it must report failures and go on, and be safe to run twice or twice at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc

from conftest import visible_files
from run_fixtures import code_of, new_experiment, new_run, put
from servers import ServerProcess


def collect(
    runs: rpb_grpc.RunServiceStub, **kwargs: object
) -> tuple[list[rpb.GarbageEvent], rpb.GarbageSummary]:
    replies = list(runs.CollectGarbage(rpb.CollectGarbageRequest(**kwargs), timeout=60))  # type: ignore[arg-type]
    assert replies[-1].HasField("summary"), "the stream must end with a summary"
    assert all(r.HasField("item") for r in replies[:-1])
    return [r.item for r in replies[:-1]], replies[-1].summary


def run_dir(server: ServerProcess, run: rpb.Run) -> Path:
    return server.root / run.experiment_id / run.run_id


def test_collects_only_deleted_runs(
    runs: rpb_grpc.RunServiceStub,
    artifacts: pb_grpc.ArtifactServiceStub,
    store_server: ServerProcess,
) -> None:
    experiment = new_experiment(runs)
    doomed, kept = new_run(runs, experiment.experiment_id), new_run(runs, experiment.experiment_id)
    for run in (doomed, kept):
        put(artifacts, "model/w.bin", b"w" * 1000, run.run_id)
        put(artifacts, "metrics.json", b"{}", run.run_id)
    runs.DeleteRun(rpb.DeleteRunRequest(run_id=doomed.run_id))

    events, summary = collect(runs, run_ids=[doomed.run_id], dry_run=True)
    assert [(e.id, e.outcome) for e in events] == [
        (doomed.run_id, rpb.GARBAGE_OUTCOME_WOULD_COLLECT)
    ]
    assert summary.dry_run and summary.runs_collected == 1
    assert (run_dir(store_server, doomed) / "artifacts" / "model" / "w.bin").exists()

    events, summary = collect(runs, run_ids=[doomed.run_id])
    assert [(e.kind, e.id, e.outcome) for e in events] == [
        (rpb.GARBAGE_KIND_RUN, doomed.run_id, rpb.GARBAGE_OUTCOME_COLLECTED)
    ]
    assert events[0].artifact_uri == doomed.artifact_uri
    assert (summary.runs_collected, summary.failed) == (1, 0)
    assert not run_dir(store_server, doomed).exists()
    assert code_of(lambda: runs.GetRun(rpb.GetRunRequest(run_id=doomed.run_id))) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert visible_files(run_dir(store_server, kept)) == [
        "artifacts/metrics.json", "artifacts/model/w.bin"
    ]  # fmt: skip

    # Twice: nothing left to do, said so, nothing else touched.
    events, summary = collect(runs, run_ids=[doomed.run_id])
    assert [(e.id, e.outcome) for e in events] == [(doomed.run_id, rpb.GARBAGE_OUTCOME_SKIPPED)]
    assert (summary.runs_collected, summary.skipped, summary.failed) == (0, 1, 0)
    assert visible_files(run_dir(store_server, kept)) != []


def test_named_active_runs_are_refused_and_nothing_is_collected(
    runs: rpb_grpc.RunServiceStub,
    artifacts: pb_grpc.ArtifactServiceStub,
    store_server: ServerProcess,
) -> None:
    experiment = new_experiment(runs)
    deleted, active = (
        new_run(runs, experiment.experiment_id),
        new_run(runs, experiment.experiment_id),
    )
    put(artifacts, "a.bin", b"a", deleted.run_id)
    put(artifacts, "a.bin", b"a", active.run_id)
    runs.DeleteRun(rpb.DeleteRunRequest(run_id=deleted.run_id))
    with pytest.raises(grpc.RpcError) as err:
        collect(runs, run_ids=[deleted.run_id, active.run_id])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert active.run_id in (err.value.details() or "")
    assert (run_dir(store_server, deleted) / "artifacts" / "a.bin").exists()
    with pytest.raises(grpc.RpcError) as err:
        collect(runs, experiment_ids=[experiment.experiment_id])  # not deleted
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:  # deleted just now: not older than an hour
        collect(runs, run_ids=[deleted.run_id], older_than_seconds=3600)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (run_dir(store_server, deleted) / "artifacts" / "a.bin").exists()
    assert (run_dir(store_server, active) / "artifacts" / "a.bin").exists()


def test_experiment_collection_removes_its_location(
    runs: rpb_grpc.RunServiceStub,
    artifacts: pb_grpc.ArtifactServiceStub,
    store_server: ServerProcess,
) -> None:
    name = f"gc-{time.monotonic_ns()}"
    doomed = new_experiment(runs, f"gcexp/{name}")
    neighbour = new_experiment(runs, f"gcexp/{name}bar")  # `foo` vs `foobar`
    for experiment in (doomed, neighbour):
        for _ in range(2):
            put(artifacts, "f.bin", b"f", new_run(runs, experiment.experiment_id).run_id)
    lone = new_run(runs, doomed.experiment_id)
    runs.DeleteRun(rpb.DeleteRunRequest(run_id=lone.run_id))  # deleted on its own, earlier
    runs.DeleteExperiment(rpb.DeleteExperimentRequest(experiment_id=doomed.experiment_id))

    events, summary = collect(runs, experiment_ids=[doomed.experiment_id])
    kinds = [(e.kind, e.outcome) for e in events]
    assert kinds.count((rpb.GARBAGE_KIND_RUN, rpb.GARBAGE_OUTCOME_COLLECTED)) == 3
    assert kinds[-1] == (rpb.GARBAGE_KIND_EXPERIMENT, rpb.GARBAGE_OUTCOME_COLLECTED)
    assert (summary.runs_collected, summary.experiments_collected, summary.failed) == (3, 1, 0)
    assert not (store_server.root / "gcexp" / name).exists()  # MLflow leaves this behind
    assert len(visible_files(store_server.root / "gcexp" / f"{name}bar")) == 2
    assert code_of(lambda: runs.GetExperiment(
        rpb.GetExperimentRequest(experiment_id=doomed.experiment_id)
    )) == grpc.StatusCode.NOT_FOUND  # fmt: skip


def test_symlinks_are_never_followed_out(
    runs: rpb_grpc.RunServiceStub,
    artifacts: pb_grpc.ArtifactServiceStub,
    store_server: ServerProcess,
    tmp_path: Path,
) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("do not delete")
    experiment = new_experiment(runs)
    inner, swapped = (
        new_run(runs, experiment.experiment_id),
        new_run(runs, experiment.experiment_id),
    )
    put(artifacts, "a.bin", b"a", inner.run_id)
    # A symlink inside a run's artifacts pointing out of the root...
    (run_dir(store_server, inner) / "artifacts" / "link").symlink_to(outside)
    # ...and a run whose whole folder was replaced by a symlink to the outside.
    run_dir(store_server, swapped).symlink_to(outside, target_is_directory=True)
    for run in (inner, swapped):
        runs.DeleteRun(rpb.DeleteRunRequest(run_id=run.run_id))
    events, summary = collect(runs, run_ids=[inner.run_id, swapped.run_id])
    assert [e.outcome for e in events] == [rpb.GARBAGE_OUTCOME_COLLECTED] * 2
    assert not run_dir(store_server, inner).exists()
    assert not run_dir(store_server, swapped).is_symlink()  # the link went, not its target
    assert (outside / "keep.txt").read_text() == "do not delete"

    # An experiment folder that is a symlink leading out: its runs resolve outside the root,
    # so they fail and keep their records for a retry once an operator has looked.
    linked = new_experiment(runs)
    stranded = new_run(runs, linked.experiment_id)
    (store_server.root / linked.experiment_id).symlink_to(outside, target_is_directory=True)
    (outside / stranded.run_id / "artifacts").mkdir(parents=True)
    (outside / stranded.run_id / "artifacts" / "keep.bin").write_text("outside")
    runs.DeleteExperiment(rpb.DeleteExperimentRequest(experiment_id=linked.experiment_id))
    events, summary = collect(runs, experiment_ids=[linked.experiment_id])
    outcomes = {e.id: (e.outcome, e.message) for e in events}
    assert outcomes[stranded.run_id][0] == rpb.GARBAGE_OUTCOME_FAILED, outcomes
    assert "outside the artifact root" in outcomes[stranded.run_id][1]
    assert summary.failed >= 1
    assert (outside / stranded.run_id / "artifacts" / "keep.bin").read_text() == "outside"
    assert (outside / "keep.txt").read_text() == "do not delete"
    got = runs.GetRun(rpb.GetRunRequest(run_id=stranded.run_id)).run
    assert got.lifecycle_stage == rpb.LIFECYCLE_STAGE_DELETED
    (store_server.root / linked.experiment_id).unlink()  # the operator removes the link
    events, summary = collect(runs, experiment_ids=[linked.experiment_id])
    assert [e.outcome for e in events] == [rpb.GARBAGE_OUTCOME_COLLECTED] * 2
    assert (outside / stranded.run_id / "artifacts" / "keep.bin").exists()


def _direct_gc_script(uri: str, roots: list[str], run_ids: list[str]) -> str:
    return (
        "import json, sys\n"
        "from google.protobuf.json_format import MessageToDict\n"
        "from artifactd_server.domain.gc import run_garbage_collection\n"
        f"for reply in run_garbage_collection({uri!r}, {roots!r}, older_than=None,"
        f" run_ids={run_ids!r}, experiment_ids=[], dry_run=False):\n"
        "    print(json.dumps(MessageToDict(reply)), flush=True)\n"
    )


def _fresh_store(uri: str, root: Path) -> tuple[object, object]:
    from artifactd_server.domain.roots import ArtifactRoots
    from artifactd_server.storage.local import LocalStorage
    from artifactd_server.store.database import open_database
    from artifactd_server.store.tracking import TrackingStore

    return TrackingStore(open_database(uri)), ArtifactRoots([LocalStorage(root)])


def test_two_collectors_at_once_collect_each_run_once(database_uri: str, tmp_path: Path) -> None:
    """Two `gc` processes on the same store: every run collected exactly once, all gone."""
    from artifactd_server.store.tracking import TrackingStore

    root = tmp_path / "root"
    store, roots = _fresh_store(database_uri, root)
    assert isinstance(store, TrackingStore)
    experiment = store.create_experiment(f"race-{time.monotonic_ns()}", None, roots.default.uri)  # type: ignore[attr-defined]
    run_ids = []
    for _ in range(30):
        run = store.create_run(experiment.experiment_id)
        folder = root / experiment.experiment_id / run.run_id / "artifacts"
        for index in range(20):
            (folder / f"d{index % 3}").mkdir(parents=True, exist_ok=True)
            (folder / f"d{index % 3}" / f"{index}.bin").write_bytes(b"x" * 100)
        store.delete_run(run.run_id)
        run_ids.append(run.run_id)
    store.database.close()

    script = _direct_gc_script(database_uri, [str(root)], run_ids)
    env_paths = [str(Path(__file__).resolve().parent.parent / p) for p in ("server", "client")]
    env = {"PYTHONPATH": ":".join(env_paths), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    collected: list[str] = []
    for out, _err in outputs:
        for line in out.splitlines():
            item = json.loads(line).get("item")
            if item and item["outcome"] == "GARBAGE_OUTCOME_COLLECTED":
                collected.append(item["id"])
            assert not item or item["outcome"] != "GARBAGE_OUTCOME_FAILED", item
    assert sorted(collected) == sorted(run_ids), "each run collected exactly once"
    assert visible_files(root) == []


def test_a_run_outside_the_roots_fails_alone(database_uri: str, tmp_path: Path) -> None:
    """A location outside the configured roots is never touched; the other runs still go."""
    from artifactd_server.domain.gc import run_garbage_collection
    from artifactd_server.store.tracking import TrackingStore

    old_root, new_root = tmp_path / "old", tmp_path / "new"
    store, roots = _fresh_store(database_uri, old_root)
    assert isinstance(store, TrackingStore)
    stranded_exp = store.create_experiment(f"old-{time.monotonic_ns()}", None, roots.default.uri)  # type: ignore[attr-defined]
    stranded = store.create_run(stranded_exp.experiment_id)
    (old_root / stranded_exp.experiment_id / stranded.run_id / "artifacts").mkdir(parents=True)
    (old_root / stranded_exp.experiment_id / stranded.run_id / "artifacts" / "f").write_text("x")
    new_roots = _fresh_store(database_uri, new_root)[1]
    fine_exp = store.create_experiment(f"new-{time.monotonic_ns()}", None, new_roots.default.uri)  # type: ignore[attr-defined]
    fine = store.create_run(fine_exp.experiment_id)
    (new_root / fine_exp.experiment_id / fine.run_id / "artifacts").mkdir(parents=True)
    for run in (stranded, fine):
        store.delete_run(run.run_id)
    store.database.close()

    replies = list(run_garbage_collection(
        database_uri, [str(new_root)], older_than=None,
        run_ids=[stranded.run_id, fine.run_id], experiment_ids=[], dry_run=False,
    ))  # fmt: skip
    outcomes = {r.item.id: r.item for r in replies if r.HasField("item")}
    assert outcomes[stranded.run_id].outcome == rpb.GARBAGE_OUTCOME_FAILED
    assert "not inside any" in outcomes[stranded.run_id].message
    assert outcomes[fine.run_id].outcome == rpb.GARBAGE_OUTCOME_COLLECTED
    assert replies[-1].summary.failed == 1
    assert (old_root / stranded_exp.experiment_id / stranded.run_id / "artifacts" / "f").exists()
    assert not (new_root / fine_exp.experiment_id / fine.run_id).exists()
