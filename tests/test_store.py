"""The SQL backend store on SQLite, PostgreSQL and MariaDB: schema management and tracking.

Every test runs on the three backends (the `database_uri` fixture); tests sharing a backend's
session database use unique experiment names and locations. Tests of schema states that would
spoil the shared database make their own throwaway database.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, inspect, table, text, update

from artifactd.protocol.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from artifactd_server.store.database import (
    VERSION_TABLE,
    Database,
    open_database,
    schema_status,
    upgrade,
)
from artifactd_server.store.schema import ACTIVE, DELETED, Base
from artifactd_server.store.tracking import Experiment, Run, TrackingStore

from databases import backend_of, fresh_database

OUR_TABLES = {"artifactd_experiments", "artifactd_runs", VERSION_TABLE}


def unique(prefix: str = "exp") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def make_experiment(store: TrackingStore, location: str | None = None) -> Experiment:
    return store.create_experiment(unique(), location, f"file:///artifacts/{unique('parent')}")


def ids(runs: list[Run]) -> list[str]:
    return [r.run_id for r in runs]


@pytest.fixture
def throwaway_uri(database_uri: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of `database_uri`'s backend, for this test alone."""
    with fresh_database(backend_of(database_uri), tmp_path) as uri:
        yield uri


# -- schema ------------------------------------------------------------------------------------


def test_fresh_database_is_migrated_to_head(throwaway_uri: str) -> None:
    database = Database(throwaway_uri)
    try:
        assert not set(inspect(database.engine).get_table_names()) & OUR_TABLES
        assert schema_status(database)[0] is None
    finally:
        database.close()

    database = open_database(throwaway_uri)
    try:
        current, head = schema_status(database)
        assert current == head
        assert set(inspect(database.engine).get_table_names()) >= OUR_TABLES
    finally:
        database.close()
    # Opening again finds it current and changes nothing.
    open_database(throwaway_uri).close()


def test_upgrade_twice_is_a_no_op(throwaway_uri: str) -> None:
    database = Database(throwaway_uri)
    try:
        before, head = upgrade(database)
        assert before is None
        tables = set(inspect(database.engine).get_table_names())
        assert tables >= OUR_TABLES
        assert upgrade(database) == (head, head)
        assert schema_status(database) == (head, head)
        assert set(inspect(database.engine).get_table_names()) == tables
    finally:
        database.close()


def test_upgrade_on_the_shared_database_is_a_no_op(tracking_store: TrackingStore) -> None:
    current, head = schema_status(tracking_store.database)
    assert current == head
    assert upgrade(tracking_store.database) == (head, head)


def test_newer_schema_is_refused(throwaway_uri: str) -> None:
    open_database(throwaway_uri).close()
    database = Database(throwaway_uri)
    try:
        with database.engine.begin() as connection:
            versions = table(VERSION_TABLE, column("version_num"))
            connection.execute(update(versions).values(version_num="9999_future"))
        with pytest.raises(FailedPrecondition, match="newer"):
            upgrade(database)
    finally:
        database.close()
    with pytest.raises(FailedPrecondition, match=r"9999_future.*newer"):
        open_database(throwaway_uri)


def test_tables_without_version_table_are_refused(throwaway_uri: str) -> None:
    database = Database(throwaway_uri)
    try:
        with database.engine.begin() as connection:
            connection.execute(text("CREATE TABLE artifactd_experiments (experiment_id INTEGER)"))
    finally:
        database.close()
    with pytest.raises(FailedPrecondition, match=f"no {VERSION_TABLE} table"):
        open_database(throwaway_uri)
    # Refusing did not start migrating the foreign tables.
    database = Database(throwaway_uri)
    try:
        assert VERSION_TABLE not in inspect(database.engine).get_table_names()
    finally:
        database.close()


def test_migrated_schema_matches_the_models(tracking_store: TrackingStore) -> None:
    with tracking_store.database.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


# -- experiments -------------------------------------------------------------------------------


def test_create_and_get_experiment(tracking_store: TrackingStore) -> None:
    name = unique()
    parent = f"s3://bucket/{unique('parent')}"
    created = tracking_store.create_experiment(f"  {name} ", None, parent)
    assert created.name == name
    assert re.fullmatch(r"[0-9]+", created.experiment_id)
    assert created.artifact_location == f"{parent}/{created.experiment_id}"
    assert created.lifecycle_stage == ACTIVE
    assert created.creation_time == created.last_update_time > 0

    assert tracking_store.get_experiment(experiment_id=created.experiment_id) == created
    assert tracking_store.get_experiment(name=name) == created

    with pytest.raises(AlreadyExists, match=name):
        tracking_store.create_experiment(name, None, parent)
    with pytest.raises(NotFound):
        tracking_store.get_experiment(name=unique())
    with pytest.raises(NotFound):
        tracking_store.get_experiment(experiment_id="2147483647")


def test_experiment_arguments_are_checked(tracking_store: TrackingStore) -> None:
    with pytest.raises(InvalidArgument):
        tracking_store.create_experiment("   ", None, "file:///x")
    with pytest.raises(InvalidArgument):
        tracking_store.create_experiment("x" * 257, None, "file:///x")
    with pytest.raises(InvalidArgument):
        tracking_store.get_experiment()
    with pytest.raises(InvalidArgument):
        tracking_store.get_experiment(experiment_id="1", name="a")
    for bad in ("abc", "-1", "1.5", "2147483648", "1" * 19):
        with pytest.raises(InvalidArgument):
            tracking_store.get_experiment(experiment_id=bad)
        with pytest.raises(InvalidArgument):
            tracking_store.delete_experiment(bad)
    with pytest.raises(InvalidArgument):
        tracking_store.list_experiments("bogus", 10)


def test_caller_chosen_location_is_kept(tracking_store: TrackingStore) -> None:
    location = f"s3://bucket/{unique('root')}/mine"
    created = make_experiment(tracking_store, location)
    assert created.artifact_location == location
    assert tracking_store.get_experiment(experiment_id=created.experiment_id) == created


def test_overlapping_locations_are_refused(tracking_store: TrackingStore) -> None:
    root = f"s3://bucket/{unique('root')}"
    make_experiment(tracking_store, f"{root}/a/b")
    for overlapping in (f"{root}/a/b", f"{root}/a/b/", f"{root}/a", root, f"{root}/a/b/c/d"):
        name = unique()
        with pytest.raises(FailedPrecondition, match="overlaps"):
            tracking_store.create_experiment(name, overlapping, "file:///unused")
        # The refused experiment was not left behind.
        with pytest.raises(NotFound):
            tracking_store.get_experiment(name=name)

    # Sharing a name prefix is not nesting: `b` and `bc`, `foobar` then `foo`.
    make_experiment(tracking_store, f"{root}/a/bc")
    make_experiment(tracking_store, f"{root}/x/foobar")
    make_experiment(tracking_store, f"{root}/x/foo")
    # LIKE wildcards in a location are literal characters.
    make_experiment(tracking_store, f"{root}/y/aXb/c")
    make_experiment(tracking_store, f"{root}/y/a_b")
    make_experiment(tracking_store, f"{root}/z/p%q")
    make_experiment(tracking_store, f"{root}/z/pq/r")


def test_list_experiments_pages_and_view_types(tracking_store: TrackingStore) -> None:
    made = [int(make_experiment(tracking_store).experiment_id) for _ in range(5)]
    assert made == sorted(made)
    deleted = {made[1], made[3]}
    for experiment_id in deleted:
        tracking_store.delete_experiment(str(experiment_id))

    def pages(view_type: str) -> list[list[int]]:
        result: list[list[int]] = []
        after = made[0] - 1  # experiments of earlier tests have smaller ids
        while True:
            page = tracking_store.list_experiments(view_type, 2, after_id=after)
            result.append([int(e.experiment_id) for e in page])
            if len(page) < 2:
                return result
            after = int(page[-1].experiment_id)

    assert pages("all") == [made[0:2], made[2:4], made[4:5]]
    active = [i for i in made if i not in deleted]
    assert pages("active_only") == [active[0:2], active[2:3]]
    assert pages("deleted_only") == [sorted(deleted), []]

    everything = tracking_store.list_experiments("all", 100_000)
    stages = {int(e.experiment_id): e.lifecycle_stage for e in everything}
    assert {stages[i] for i in deleted} == {DELETED}
    assert {stages[i] for i in active} == {ACTIVE}
    listed = [int(e.experiment_id) for e in everything]
    assert listed == sorted(listed)


def test_delete_and_restore_experiment_with_runs(tracking_store: TrackingStore) -> None:
    experiment = make_experiment(tracking_store)
    eid = experiment.experiment_id
    r1, r2, alone = (tracking_store.create_run(eid) for _ in range(3))
    alone_deleted = tracking_store.delete_run(alone.run_id)
    assert alone_deleted.lifecycle_stage == DELETED
    assert alone_deleted.deleted_time is not None

    deleted = tracking_store.delete_experiment(eid)
    assert deleted.lifecycle_stage == DELETED
    assert tracking_store.get_experiment(experiment_id=eid).lifecycle_stage == DELETED
    for run in (r1, r2):
        got = tracking_store.get_run(run.run_id)
        assert got.lifecycle_stage == DELETED
        assert got.deleted_time is not None
    assert tracking_store.get_run(alone.run_id) == alone_deleted
    assert set(tracking_store.deleted_run_ids(None, [int(eid)])) == {
        r1.run_id,
        r2.run_id,
        alone.run_id,
    }
    assert int(eid) in tracking_store.deleted_experiment_ids(None)
    with pytest.raises(FailedPrecondition):
        tracking_store.delete_experiment(eid)

    restored = tracking_store.restore_experiment(eid)
    assert restored.lifecycle_stage == ACTIVE
    for run in (r1, r2):
        got = tracking_store.get_run(run.run_id)
        assert got.lifecycle_stage == ACTIVE
        assert got.deleted_time is None
    # The run deleted on its own before stays deleted, deletion time untouched.
    assert tracking_store.get_run(alone.run_id) == alone_deleted
    with pytest.raises(FailedPrecondition):
        tracking_store.restore_experiment(eid)

    # Restoring the run deleted alone works once its experiment is active.
    assert tracking_store.restore_run(alone.run_id).lifecycle_stage == ACTIVE
    with pytest.raises(NotFound):
        tracking_store.delete_experiment("2147483647")


def test_runs_in_a_deleted_experiment(tracking_store: TrackingStore) -> None:
    experiment = make_experiment(tracking_store)
    run = tracking_store.create_run(experiment.experiment_id)
    tracking_store.delete_experiment(experiment.experiment_id)
    with pytest.raises(FailedPrecondition, match="deleted"):
        tracking_store.create_run(experiment.experiment_id)
    with pytest.raises(FailedPrecondition, match="restore the experiment"):
        tracking_store.restore_run(run.run_id)
    assert tracking_store.get_run(run.run_id).lifecycle_stage == DELETED
    with pytest.raises(NotFound):
        tracking_store.create_run("2147483647")


# -- runs --------------------------------------------------------------------------------------


def test_create_and_get_run(tracking_store: TrackingStore) -> None:
    experiment = make_experiment(tracking_store)
    run = tracking_store.create_run(experiment.experiment_id, "training", 1234)
    assert re.fullmatch(r"[0-9a-f]{32}", run.run_id)
    assert run.experiment_id == experiment.experiment_id
    assert run.artifact_uri == f"{experiment.artifact_location}/{run.run_id}/artifacts"
    assert (run.run_name, run.status, run.lifecycle_stage) == ("training", "RUNNING", ACTIVE)
    assert (run.start_time, run.end_time, run.deleted_time) == (1234, None, None)
    assert tracking_store.get_run(run.run_id) == run

    unnamed = tracking_store.create_run(experiment.experiment_id)
    assert unnamed.run_name == unnamed.run_id[:8]
    assert unnamed.start_time > 0
    assert unnamed.run_id != run.run_id

    chosen = make_experiment(tracking_store, f"s3://bucket/{unique('root')}/chosen")
    in_chosen = tracking_store.create_run(chosen.experiment_id)
    assert in_chosen.artifact_uri == f"{chosen.artifact_location}/{in_chosen.run_id}/artifacts"

    with pytest.raises(NotFound):
        tracking_store.get_run(uuid.uuid4().hex)


def test_invalid_run_arguments(tracking_store: TrackingStore) -> None:
    experiment = make_experiment(tracking_store)
    bad_ids = ("", "xyz", uuid.uuid4().hex.upper(), uuid.uuid4().hex[:31], str(uuid.uuid4()))
    for bad in bad_ids:
        for call in (
            tracking_store.get_run,
            tracking_store.delete_run,
            tracking_store.restore_run,
        ):
            with pytest.raises(InvalidArgument):
                call(bad)
        with pytest.raises(InvalidArgument):
            tracking_store.update_run(bad, "FINISHED", None, None)
    with pytest.raises(InvalidArgument):
        tracking_store.create_run("not-a-number")
    with pytest.raises(InvalidArgument):
        tracking_store.create_run(experiment.experiment_id, "x" * 257)
    with pytest.raises(InvalidArgument):
        tracking_store.create_run(experiment.experiment_id, start_time=-1)
    with pytest.raises(InvalidArgument):
        tracking_store.list_runs(["abc"], "all", 10)
    with pytest.raises(InvalidArgument):
        tracking_store.list_runs(["2147483648"], "all", 10)
    with pytest.raises(InvalidArgument):
        tracking_store.list_runs([experiment.experiment_id], "everything", 10)


def test_list_runs_order_paging_filters(tracking_store: TrackingStore) -> None:
    e1 = make_experiment(tracking_store).experiment_id
    e2 = make_experiment(tracking_store).experiment_id
    runs = [tracking_store.create_run(e1, start_time=t) for t in (1000, 3000, 2000, 2000, 2000)]
    other = tracking_store.create_run(e2, start_time=2500)
    expected = sorted(runs, key=lambda r: (-r.start_time, r.run_id))

    assert tracking_store.list_runs([e1], "all", 100) == expected

    pages: list[list[Run]] = []
    after: tuple[int, str] | None = None
    while True:
        page = tracking_store.list_runs([e1], "active_only", 2, after=after)
        pages.append(page)
        if len(page) < 2:
            break
        after = (page[-1].start_time, page[-1].run_id)
    assert [ids(p) for p in pages] == [ids(expected[0:2]), ids(expected[2:4]), ids(expected[4:])]

    both = tracking_store.list_runs([e1, e2], "all", 100)
    assert ids(both) == ids(sorted([*runs, other], key=lambda r: (-r.start_time, r.run_id)))
    assert ids(tracking_store.list_runs([e2], "all", 100)) == [other.run_id]
    everywhere = ids(tracking_store.list_runs([], "all", 100_000))
    assert set(ids(both)) <= set(everywhere)

    gone = expected[1]
    tracking_store.delete_run(gone.run_id)
    active = [r for r in expected if r.run_id != gone.run_id]
    assert ids(tracking_store.list_runs([e1], "active_only", 100)) == ids(active)
    assert ids(tracking_store.list_runs([e1], "deleted_only", 100)) == [gone.run_id]
    assert ids(tracking_store.list_runs([e1], "all", 100)) == ids(expected)


def test_update_run(tracking_store: TrackingStore) -> None:
    run = tracking_store.create_run(make_experiment(tracking_store).experiment_id, "first", 10)
    updated = tracking_store.update_run(run.run_id, "FINISHED", 99, "second")
    assert (updated.status, updated.end_time, updated.run_name) == ("FINISHED", 99, "second")
    assert tracking_store.get_run(run.run_id) == updated
    unchanged = tracking_store.update_run(run.run_id, None, None, None)
    assert unchanged == updated
    assert tracking_store.update_run(run.run_id, "FAILED", None, None).end_time == 99

    with pytest.raises(InvalidArgument):
        tracking_store.update_run(run.run_id, "DONE", None, None)
    with pytest.raises(InvalidArgument):
        tracking_store.update_run(run.run_id, None, -5, None)
    with pytest.raises(NotFound):
        tracking_store.update_run(uuid.uuid4().hex, "FINISHED", None, None)
    tracking_store.delete_run(run.run_id)
    with pytest.raises(FailedPrecondition):
        tracking_store.update_run(run.run_id, "FINISHED", None, None)
    with pytest.raises(FailedPrecondition):
        tracking_store.delete_run(run.run_id)
    restored = tracking_store.restore_run(run.run_id)
    assert (restored.lifecycle_stage, restored.deleted_time) == (ACTIVE, None)
    with pytest.raises(FailedPrecondition):
        tracking_store.restore_run(run.run_id)


# -- claims (garbage collection) ---------------------------------------------------------------


def deleted_run(store: TrackingStore) -> Run:
    run = store.create_run(make_experiment(store).experiment_id)
    return store.delete_run(run.run_id)


def test_claim_needs_a_deleted_run(tracking_store: TrackingStore) -> None:
    run = tracking_store.create_run(make_experiment(tracking_store).experiment_id)
    with tracking_store.claim_run(run.run_id) as claimed:
        assert claimed is None
    assert tracking_store.get_run(run.run_id) == run
    with tracking_store.claim_run(uuid.uuid4().hex) as claimed:
        assert claimed is None


def test_claim_deletes_the_row(tracking_store: TrackingStore) -> None:
    run = deleted_run(tracking_store)
    with tracking_store.claim_run(run.run_id) as claimed:
        assert claimed == run
    with pytest.raises(NotFound):
        tracking_store.get_run(run.run_id)
    with tracking_store.claim_run(run.run_id) as claimed:
        assert claimed is None


def test_failed_claim_keeps_the_row(tracking_store: TrackingStore) -> None:
    run = deleted_run(tracking_store)
    with (
        pytest.raises(RuntimeError, match="collector failed"),
        tracking_store.claim_run(run.run_id) as claimed,
    ):
        assert claimed == run
        raise RuntimeError("collector failed")
    assert tracking_store.get_run(run.run_id) == run
    # Still claimable, by the next collector.
    with tracking_store.claim_run(run.run_id) as claimed:
        assert claimed == run
    with pytest.raises(NotFound):
        tracking_store.get_run(run.run_id)


def test_one_collector_claims_a_run(database_uri: str, tracking_store: TrackingStore) -> None:
    run = deleted_run(tracking_store)
    if backend_of(database_uri) == "sqlite":
        # No row locks in SQLite: a second claim after the first finds the row gone.
        with tracking_store.claim_run(run.run_id) as claimed:
            assert claimed == run
        with tracking_store.claim_run(run.run_id) as claimed:
            assert claimed is None
        with pytest.raises(NotFound):
            tracking_store.get_run(run.run_id)
        return

    holding, release = threading.Event(), threading.Event()
    results: dict[str, Run | None] = {}
    seconds: list[float] = []
    errors: list[BaseException] = []

    def first() -> None:
        database = open_database(database_uri)
        try:
            with TrackingStore(database).claim_run(run.run_id) as claimed:
                results["first"] = claimed
                holding.set()
                release.wait(10)  # a blocked second claimer shows up as a 10 s wait
        except BaseException as exc:
            errors.append(exc)
            holding.set()
        finally:
            database.close()

    def second() -> None:
        database = open_database(database_uri)
        try:
            holding.wait(10)
            started = time.monotonic()
            with TrackingStore(database).claim_run(run.run_id) as claimed:
                results["second"] = claimed
            seconds.append(time.monotonic() - started)
        except BaseException as exc:
            errors.append(exc)
        finally:
            release.set()
            database.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "claimers did not finish"
    assert errors == []
    assert results["first"] == run
    assert results["second"] is None
    assert seconds[0] < 5, "the second claim waited for the first (no SKIP LOCKED)"
    with pytest.raises(NotFound):
        tracking_store.get_run(run.run_id)


def test_names_and_locations_are_case_sensitive(tracking_store: TrackingStore) -> None:
    """Same on every backend: MySQL/MariaDB's default collations would ignore case."""
    name, root = unique("Case"), f"s3://bucket/{unique('root')}"
    upper = tracking_store.create_experiment(name, f"{root}/Data", "file:///unused")
    lower = tracking_store.create_experiment(name.lower(), f"{root}/data", "file:///unused")
    assert lower.experiment_id != upper.experiment_id
    assert tracking_store.get_experiment(name=name) == upper
    assert tracking_store.get_experiment(name=name.lower()) == lower
    with pytest.raises(NotFound):
        tracking_store.get_experiment(name=name.upper())
    make_experiment(tracking_store, f"{root}/DATA/inner")
