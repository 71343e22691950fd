"""TrackingClient, run-scoped ArtifactClient calls, runs:/ URIs and `--older-than` durations.

The first part needs no server: what the client refuses before sending anything (durations, run
ids, runs:/ URIs, arguments) and how protos become dataclasses. The second part runs the library
against the session server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from artifactd.client import (
    ArtifactClient,
    ClientSettings,
    Experiment,
    GarbageEvent,
    GarbageSummary,
    Run,
    TrackingClient,
)
from artifactd.client.target import Location, in_run, resolve
from artifactd.client.tracking import garbage_item
from artifactd.protocol import errors
from artifactd.protocol.durations import parse_duration
from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.ids import check_run_id
from artifactd.protocol.paths import ROOT, parse
from artifactd.v1 import run_service_pb2 as rpb

from conftest import sha256_of, write_random
from servers import ServerProcess

RUN = "0123456789abcdef0123456789abcdef"
OTHER_RUN = "fedcba9876543210fedcba9876543210"
NOWHERE = "127.0.0.1:1"  # nothing listens there: a call that reached the network would fail


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5d2h", 1.5 * 86400 + 7200),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("1d4s", 86404),
        ("0.5h", 1800),
        (".5h", 1800),
        ("1.m", 60),
        ("0s", 0),
        ("90m", 5400),
        (" 1h ", 3600),
        ("007s", 7),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "10",  # a number without a unit
        "d",
        "s",
        "1h1d",  # out of order
        "1m2h",
        "1d1d",  # a unit twice
        "1h30m1h",
        "1x",
        "1w",
        "1M",  # upper case: minutes? months? refused
        "1D",
        "-1s",
        "+1s",
        "1e3s",
        "1d 2h",
        "s1",
        "1.2.3s",
        "..5s",
        "nan",
        "infs",
        "1_000s",
        "\uff11s",  # a full-width digit
        "1d2",
    ],
)
def test_bad_durations_are_refused_with_the_format(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_duration(text)
    assert repr(text) in caught.value.message
    assert "#d#h#m#s" in caught.value.message


def test_an_overflowing_duration_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="too long"):
        parse_duration("9" * 400 + "d")


# -- run ids and runs:/ URIs ------------------------------------------------------------------


def test_run_ids() -> None:
    assert check_run_id(RUN) == RUN
    for bad in ("", "0123", RUN.upper(), RUN + "0", RUN[:-1] + "g", f" {RUN}", RUN[:-1] + "\n",
                "../" + RUN[3:], "0123456789abcdef-0123456789abcde"):  # fmt: skip
        with pytest.raises(InvalidArgument) as caught:
            check_run_id(bad)
        assert "32 lower-case hex characters" in caught.value.message


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        (f"runs:/{RUN}/model/weights.bin", "model/weights.bin"),
        (f"runs:/{RUN}/model", "model"),
        (f"runs:/{RUN}", ""),
        (f"runs:/{RUN}/", ""),
        (f"RUNS:/{RUN}/a", "a"),
        (f"runs:/{RUN}/données/模型.bin", "données/模型.bin"),
        (f"runs:/{RUN}/a%b", "a%b"),
    ],
)
def test_runs_uris_name_a_run_and_no_server(uri: str, path: str) -> None:
    assert resolve(uri) == Location(None, parse(path, allow_root=True), RUN)


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("runs:/", "names no run"),
        ("runs:", "not a runs:/ URI"),
        ("runs:model", "not a runs:/ URI"),
        ("runs://", "names a host"),
        (f"runs://{RUN}/model", "names a host"),
        ("runs://127.0.0.1:50051/x", "names a host"),
        ("runs:/0123/model", "not a run id"),
        (f"runs:/{RUN.upper()}/model", "not a run id"),
        (f"runs://{RUN}", "names a host"),
        (f"runs:/{RUN}/../x", "'..'"),
        (f"runs:/{RUN}/a/../../x", "'..'"),
        (f"runs:/{RUN}/%2e%2e/x", "'..'"),
        (f"runs:/{RUN}//etc/passwd", "path"),
        (f"runs:/{RUN}/x?y=1", "query"),
        (f"runs:/{RUN}/x#frag", "query or fragment"),
        (f"runs:/{RUN}/.artifactd-upload-x", ".artifactd-"),
    ],
)
def test_bad_runs_uris_are_refused(uri: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve(uri)
    assert needle in caught.value.message


def test_a_runs_uri_needs_a_path_where_the_root_is_not_allowed() -> None:
    with pytest.raises(InvalidArgument):
        resolve(f"runs:/{RUN}", allow_root=False)
    assert resolve(f"runs:/{RUN}/x", allow_root=False).path == parse("x")


def test_locations_print_as_runs_uris() -> None:
    assert str(Location(None, parse("a/b"), RUN)) == f"runs:/{RUN}/a/b"
    assert str(Location(None, ROOT, RUN)) == f"runs:/{RUN}"
    assert str(Location("h:1", parse("a/b"))) == "a/b"


def test_in_run() -> None:
    plain = resolve("a/b")
    assert in_run(plain, None) == plain
    assert in_run(plain, RUN) == Location(None, parse("a/b"), RUN)
    uri = resolve(f"runs:/{RUN}/a")
    assert in_run(uri, RUN) == uri
    assert in_run(uri, None) == uri
    with pytest.raises(InvalidArgument, match="pass one of them"):
        in_run(uri, OTHER_RUN)
    with pytest.raises(InvalidArgument, match="not a run id"):
        in_run(plain, "")
    served = in_run(resolve("artifactd://h:5/a"), RUN)
    assert (served.target, served.run_id) == ("h:5", RUN)


# -- what the clients refuse before sending anything ------------------------------------------


@pytest.fixture
def offline_client() -> ArtifactClient:
    return ArtifactClient(NOWHERE, settings=ClientSettings(max_retries=0, rpc_timeout=2))


def test_every_artifact_method_checks_the_run_id(
    offline_client: ArtifactClient, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "dir").mkdir()
    client = offline_client
    calls: dict[str, Callable[[str, str | None], object]] = {
        "get_artifact_info": lambda where, run: client.get_artifact_info(where, run_id=run),
        "iter_artifacts": lambda where, run: list(client.iter_artifacts(where, run_id=run)),
        "list_artifacts": lambda where, run: client.list_artifacts(where, run_id=run),
        "delete_artifacts": lambda where, run: client.delete_artifacts(where, run_id=run),
        "log_artifact": lambda where, run: client.log_artifact(tmp_path / "f", where, run_id=run),
        "log_artifacts": lambda where, run: client.log_artifacts(
            tmp_path / "dir", where, run_id=run
        ),
        "download_artifacts": lambda where, run: client.download_artifacts(
            where, tmp_path / "d", run_id=run
        ),
    }
    with client:
        for name, call in calls.items():
            for bad in ("", "nope", RUN.upper(), f"{RUN}/x", f"../{RUN}"):
                with pytest.raises(InvalidArgument, match="32 lower-case hex") as caught:
                    call("a", bad)
                assert repr(bad) in caught.value.message, name
            with pytest.raises(InvalidArgument, match="pass one of them"):
                call(f"runs:/{RUN}/a", OTHER_RUN)
            with pytest.raises(InvalidArgument, match="not a run id"):
                call("runs:/0123/a", None)
            with pytest.raises(InvalidArgument, match="names a host"):
                call(f"runs://{RUN}/a", None)
    assert not (tmp_path / "d").exists()


def test_only_a_run_root_can_be_deleted_whole(offline_client: ArtifactClient) -> None:
    with offline_client:
        for where in (None, "", "artifactd://127.0.0.1:1/"):
            with pytest.raises(InvalidArgument, match="the artifact root itself cannot be deleted"):
                offline_client.delete_artifacts(where)
        for call in (
            lambda: offline_client.delete_artifacts(f"runs:/{RUN}"),
            lambda: offline_client.delete_artifacts(run_id=RUN),
        ):
            with pytest.raises(errors.Unavailable):  # allowed: it went to the (absent) server
                call()


def test_tracking_client_refuses_bad_arguments_before_sending() -> None:
    with TrackingClient(NOWHERE, settings=ClientSettings(max_retries=0)) as client:
        refused = [
            (lambda: client.get_run("nope"), "32 lower-case hex"),
            (lambda: client.delete_run(RUN.upper()), "32 lower-case hex"),
            (lambda: client.restore_run(""), "32 lower-case hex"),
            (lambda: client.update_run("x", status="FINISHED"), "32 lower-case hex"),
            (lambda: client.update_run(RUN, status="DONE"), "not one of"),
            (lambda: client.update_run(RUN, end_time=-5), "positive"),
            (lambda: client.set_terminated(RUN, "RUNNING"), "FINISHED, FAILED, KILLED"),
            (lambda: client.get_experiment("abc"), "decimal digits"),
            (lambda: client.get_experiment("-1"), "decimal digits"),
            (lambda: client.delete_experiment("1 OR 1=1"), "decimal digits"),
            (lambda: client.restore_experiment("²"), "decimal digits"),
            (lambda: client.get_experiment_by_name(""), "name is required"),
            (lambda: client.list_experiments("everything"), "active_only"),
            (lambda: client.list_runs(["1"], view_type="nope"), "active_only"),
            (lambda: client.list_runs(["x"]), "decimal digits"),
            (lambda: client.create_run("x"), "decimal digits"),
            (lambda: client.create_run("1", start_time=-1), "positive"),
            (lambda: client.collect_garbage(older_than=-1), "0 or more"),
            (lambda: client.collect_garbage(run_ids=["nope"]), "32 lower-case hex"),
            (lambda: client.collect_garbage(experiment_ids=["x"]), "decimal digits"),
        ]
        for call, needle in refused:
            with pytest.raises(InvalidArgument) as caught:
                call()
            assert needle in caught.value.message


def test_tracking_reads_retry_and_writes_do_not() -> None:
    import time

    settings = ClientSettings(max_retries=2, rpc_timeout=5)
    with TrackingClient(NOWHERE, settings=settings) as client:
        t0 = time.monotonic()
        with pytest.raises(errors.Unavailable):
            client.create_experiment("x")
        assert time.monotonic() - t0 < 0.2 * 2, "a write is sent once"
        t0 = time.monotonic()
        with pytest.raises(errors.Unavailable) as caught:
            client.list_experiments()
        assert time.monotonic() - t0 >= 0.6, "a read backs off (0.25 s, 0.5 s) before failing"
        assert "artifactd server unavailable" in caught.value.message


def test_view_types_accept_mlflow_spellings() -> None:
    from artifactd.client.tracking import _view_type

    assert _view_type("ACTIVE_ONLY") == rpb.VIEW_TYPE_ACTIVE_ONLY
    assert _view_type("deleted-only") == rpb.VIEW_TYPE_DELETED_ONLY
    assert _view_type("all") == rpb.VIEW_TYPE_ALL


# -- protos into dataclasses ------------------------------------------------------------------


def test_messages_become_frozen_dataclasses() -> None:
    run = Run.from_proto(
        rpb.Run(
            run_id=RUN, experiment_id="3", run_name="r", artifact_uri="file:///x/3/r/artifacts",
            lifecycle_stage=rpb.LIFECYCLE_STAGE_ACTIVE, status=rpb.RUN_STATUS_RUNNING,
            start_time=5,
        )
    )  # fmt: skip
    assert run == Run(RUN, "3", "r", "file:///x/3/r/artifacts", "active", "RUNNING", 5, None, None)
    with pytest.raises(AttributeError):
        run.status = "FINISHED"  # type: ignore[misc]
    ended = Run.from_proto(
        rpb.Run(run_id=RUN, status=rpb.RUN_STATUS_KILLED, end_time=9, deleted_time=10,
                lifecycle_stage=rpb.LIFECYCLE_STAGE_DELETED)
    )  # fmt: skip
    assert (ended.status, ended.end_time, ended.deleted_time, ended.lifecycle_stage) == (
        "KILLED", 9, 10, "deleted"
    )  # fmt: skip
    experiment = Experiment.from_proto(
        rpb.Experiment(experiment_id="1", name="n", artifact_location="file:///x/1",
                       lifecycle_stage=rpb.LIFECYCLE_STAGE_DELETED, creation_time=1,
                       last_update_time=2)
    )  # fmt: skip
    assert experiment == Experiment("1", "n", "file:///x/1", "deleted", 1, 2)


def test_garbage_messages() -> None:
    event = garbage_item(
        rpb.CollectGarbageResponse(
            item=rpb.GarbageEvent(kind=rpb.GARBAGE_KIND_RUN, id=RUN, artifact_uri="u",
                                  outcome=rpb.GARBAGE_OUTCOME_WOULD_COLLECT)
        )
    )  # fmt: skip
    assert event == GarbageEvent("run", RUN, "u", "would_collect", "")
    summary = garbage_item(
        rpb.CollectGarbageResponse(
            summary=rpb.GarbageSummary(runs_collected=2, experiments_collected=1, failed=1)
        )
    )
    assert summary == GarbageSummary(2, 1, 0, 1, False)
    with pytest.raises(InvalidArgument):
        garbage_item(rpb.CollectGarbageResponse())


# -- against the server -----------------------------------------------------------------------


@pytest.fixture
def tracking(server: ServerProcess) -> TrackingClient:
    return TrackingClient(server.target)


def _name() -> str:
    return f"exp-{uuid.uuid4().hex}"


def test_experiments(tracking: TrackingClient) -> None:
    with tracking:
        name = _name()
        created = tracking.create_experiment(name)
        assert (created.name, created.lifecycle_stage) == (name, "active")
        assert created.experiment_id.isdigit() and created.artifact_location
        assert tracking.get_experiment(created.experiment_id) == created
        assert tracking.get_experiment(int(created.experiment_id)) == created
        assert tracking.get_experiment_by_name(name) == created
        assert tracking.get_experiment_by_name(_name()) is None
        with pytest.raises(errors.NotFound):
            tracking.get_experiment("999999999")
        with pytest.raises(errors.AlreadyExists):
            tracking.create_experiment(name)

        others = [tracking.create_experiment(_name()) for _ in range(3)]
        everything = tracking.list_experiments()
        assert {e.experiment_id for e in [created, *others]} <= {
            e.experiment_id for e in everything
        }
        assert tracking.list_experiments(page_size=1) == everything, "all pages are fetched"
        ids = [int(e.experiment_id) for e in everything]
        assert ids == sorted(ids)

        deleted = tracking.delete_experiment(created.experiment_id)
        assert deleted.lifecycle_stage == "deleted"
        assert created.experiment_id not in {e.experiment_id for e in tracking.list_experiments()}
        assert created.experiment_id in {
            e.experiment_id for e in tracking.list_experiments("deleted_only", page_size=1)
        }
        assert created.experiment_id in {e.experiment_id for e in tracking.list_experiments("all")}
        assert tracking.restore_experiment(created.experiment_id).lifecycle_stage == "active"


def test_runs(tracking: TrackingClient) -> None:
    with tracking:
        experiment = tracking.create_experiment(_name())
        run = tracking.create_run(experiment.experiment_id, run_name="first", start_time=1000)
        assert (run.experiment_id, run.run_name, run.status, run.lifecycle_stage) == (
            experiment.experiment_id, "first", "RUNNING", "active"
        )  # fmt: skip
        assert run.start_time == 1000 and run.end_time is None
        assert run.artifact_uri.endswith(f"/{run.run_id}/artifacts")
        check_run_id(run.run_id)
        assert tracking.get_run(run.run_id) == run

        second = tracking.create_run(experiment.experiment_id)
        third = tracking.create_run(experiment.experiment_id)
        listed = tracking.list_runs([experiment.experiment_id], page_size=1)
        assert {r.run_id for r in listed} == {run.run_id, second.run_id, third.run_id}
        assert tracking.list_runs(experiment.experiment_id) == listed
        assert run.run_id in {r.run_id for r in tracking.list_runs()}

        renamed = tracking.update_run(second.run_id, run_name="renamed")
        assert (renamed.run_name, renamed.status) == ("renamed", "RUNNING")
        ended = tracking.set_terminated(run.run_id)
        assert ended.status == "FINISHED" and ended.end_time is not None
        failed = tracking.set_terminated(second.run_id, "FAILED", end_time=5000)
        assert (failed.status, failed.end_time) == ("FAILED", 5000)

        assert tracking.delete_run(third.run_id).lifecycle_stage == "deleted"
        active = tracking.list_runs([experiment.experiment_id])
        assert third.run_id not in {r.run_id for r in active}
        assert [
            r.run_id for r in tracking.list_runs([experiment.experiment_id], "deleted_only")
        ] == [third.run_id]
        assert tracking.restore_run(third.run_id).lifecycle_stage == "active"

        with pytest.raises(errors.NotFound):
            tracking.get_run(uuid.uuid4().hex)
        with pytest.raises(errors.NotFound):
            tracking.create_run("999999999")


def test_run_scoped_artifacts(
    server: ServerProcess, tracking: TrackingClient, client: ArtifactClient, tmp_path: Path
) -> None:
    with tracking:
        run = tracking.create_run(tracking.create_experiment(_name()).experiment_id)
    digest = write_random(tmp_path / "src" / "model.bin", 300_000)
    write_random(tmp_path / "src" / "sub" / "a.txt", 10)

    info = client.log_artifact(tmp_path / "src" / "model.bin", "models", run_id=run.run_id)
    assert (info.path, info.sha256) == ("models/model.bin", digest)
    stored = client.log_artifacts(tmp_path / "src", f"runs:/{run.run_id}/tree")
    assert sorted(i.path for i in stored) == ["tree/model.bin", "tree/sub/a.txt"]
    # the bytes are where the run's artifact URI says
    root = Path(run.artifact_uri.removeprefix("file://"))
    assert sha256_of(root / "models" / "model.bin") == digest

    assert [i.path for i in client.list_artifacts(run_id=run.run_id)] == ["models", "tree"]
    assert [i.path for i in client.list_artifacts(f"runs:/{run.run_id}")] == ["models", "tree"]
    assert [i.path for i in client.list_artifacts(f"runs:/{run.run_id}/tree", recursive=True)] == [
        "tree/model.bin", "tree/sub", "tree/sub/a.txt"
    ]  # fmt: skip
    listed = list(client.iter_artifacts("tree", recursive=True, page_size=1, run_id=run.run_id))
    assert [i.path for i in listed] == ["tree/model.bin", "tree/sub", "tree/sub/a.txt"]
    assert client.get_artifact_info("models/model.bin", run_id=run.run_id).sha256 == digest
    assert client.get_artifact_info(f"runs:/{run.run_id}").is_dir
    with pytest.raises(errors.NotFound):
        client.get_artifact_info("models/model.bin")  # not at the server's root

    local = client.download_artifacts(f"runs:/{run.run_id}/models/model.bin", tmp_path / "d1")
    assert Path(local) == tmp_path / "d1" / "models" / "model.bin"
    assert sha256_of(Path(local)) == digest
    tree = client.download_artifacts("tree", tmp_path / "d2", run_id=run.run_id)
    assert sorted(str(p.relative_to(tree)) for p in Path(tree).rglob("*") if p.is_file()) == [
        "model.bin", "sub/a.txt"
    ]  # fmt: skip
    whole = client.download_artifacts(dst_path=tmp_path / "d3", run_id=run.run_id)
    assert (Path(whole) / "tree" / "sub" / "a.txt").is_file()

    assert client.delete_artifacts("tree/sub", run_id=run.run_id) is True
    assert client.delete_artifacts(f"runs:/{run.run_id}/tree/sub") is False
    assert not (root / "tree" / "sub").exists()


def test_deleted_runs_are_read_only_until_restored(
    tracking: TrackingClient, client: ArtifactClient, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("x")
    with tracking:
        run = tracking.create_run(tracking.create_experiment(_name()).experiment_id)
        client.log_artifact(tmp_path / "f.txt", run_id=run.run_id)
        tracking.delete_run(run.run_id)
        with pytest.raises(errors.FailedPrecondition):
            client.log_artifact(tmp_path / "f.txt", run_id=run.run_id)
        with pytest.raises(errors.FailedPrecondition):
            client.delete_artifacts("f.txt", run_id=run.run_id)
        assert [i.path for i in client.list_artifacts(run_id=run.run_id)] == ["f.txt"]
        tracking.restore_run(run.run_id)
        client.log_artifact(tmp_path / "f.txt", "again", run_id=run.run_id)
    with pytest.raises(errors.NotFound):
        client.list_artifacts(run_id=uuid.uuid4().hex)


def test_collect_garbage(tracking: TrackingClient, client: ArtifactClient, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with tracking:
        experiment = tracking.create_experiment(_name())
        run = tracking.create_run(experiment.experiment_id)
        kept = tracking.create_run(experiment.experiment_id)
        client.log_artifact(tmp_path / "f.txt", run_id=run.run_id)
        root = Path(run.artifact_uri.removeprefix("file://"))
        assert (root / "f.txt").is_file()

        with pytest.raises(errors.FailedPrecondition, match="not deleted"):
            list(tracking.collect_garbage(run_ids=[run.run_id]))
        tracking.delete_run(run.run_id)
        with pytest.raises(errors.FailedPrecondition, match="too recently"):
            list(tracking.collect_garbage(older_than=3600, run_ids=[run.run_id]))

        dry = list(tracking.collect_garbage(run_ids=[run.run_id], dry_run=True))
        assert dry == [
            GarbageEvent("run", run.run_id, run.artifact_uri, "would_collect", ""),
            GarbageSummary(1, 0, 0, 0, True),
        ]
        assert (root / "f.txt").is_file()

        done = list(tracking.collect_garbage(older_than=0, run_ids=[run.run_id]))
        assert [(e.kind, e.id, e.outcome) for e in done[:-1] if isinstance(e, GarbageEvent)] == [
            ("run", run.run_id, "collected")
        ]
        assert done[-1] == GarbageSummary(1, 0, 0, 0, False)
        assert not root.exists()
        with pytest.raises(errors.NotFound):
            tracking.get_run(run.run_id)
        assert tracking.get_run(kept.run_id).lifecycle_stage == "active"
