"""`artifactd experiments|runs|gc|db` and the run-scoped `artifactd artifacts` commands, end to end.

Subprocesses as a user runs them, against the session server (each test makes its own
experiments, and gc is always limited to the test's own runs), or against a server of the test's
own for gc without a server, which opens the backend store and the artifact roots itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import sha256_of, write_random
from servers import ServerProcess, start_server

TOP = Path(__file__).resolve().parent.parent


def cli(
    *args: str, server: ServerProcess | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TOP / "server"), str(TOP / "client")]),
        **(env or {}),
    }
    if server is not None:
        full_env["ARTIFACTD_SERVER"] = server.target
    return subprocess.run(
        [sys.executable, "-m", "artifactd.cli.main", *args],
        capture_output=True, text=True, env=full_env, timeout=120, check=False,
    )  # fmt: skip


def ok(*args: str, server: ServerProcess | None = None, **kw: Any) -> str:
    done = cli(*args, server=server, **kw)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def one_line_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert needle in done.stderr, done.stderr


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def new_experiment(server: ServerProcess) -> dict[str, Any]:
    name = f"exp-{uuid.uuid4().hex}"
    [experiment] = json_lines(ok("experiments", "create", "-n", name, "--json", server=server))
    return experiment


def new_run(server: ServerProcess, experiment_id: str, *extra: str) -> dict[str, Any]:
    [run] = json_lines(ok("runs", "create", "-x", experiment_id, "--json", *extra, server=server))
    return run


def run_root(run: dict[str, Any]) -> Path:
    return Path(run["artifact_uri"].removeprefix("file://"))


# -- experiments and runs ---------------------------------------------------------------------


def test_experiments(server: ServerProcess) -> None:
    name = f"exp-{uuid.uuid4().hex}"
    table = ok("experiments", "create", "--experiment-name", name, server=server).splitlines()
    assert table[0].split() == [
        "EXPERIMENT",
        "ID",
        "NAME",
        "STAGE",
        "CREATED",
        "ARTIFACT",
        "LOCATION",
    ]
    experiment_id, shown_name, stage, created, location = table[1].split()
    assert (shown_name, stage) == (name, "active")
    assert created.endswith("Z") and location.startswith("file://")

    [by_id] = json_lines(ok("experiments", "get", "-x", experiment_id, "--json", server=server))
    assert by_id == {
        "experiment_id": experiment_id,
        "name": name,
        "artifact_location": location,
        "lifecycle_stage": "active",
        "creation_time": by_id["creation_time"],
        "last_update_time": by_id["last_update_time"],
    }
    assert isinstance(by_id["creation_time"], int)
    [by_name] = json_lines(ok("experiments", "get", "-n", name, "--json", server=server))
    assert by_name == by_id

    listed = json_lines(ok("experiments", "list", "--json", server=server))
    assert by_id in listed
    assert name in ok("experiments", "list", server=server)

    [deleted] = json_lines(
        ok("experiments", "delete", "-x", experiment_id, "--json", server=server)
    )
    assert deleted["lifecycle_stage"] == "deleted"
    assert name not in ok("experiments", "list", server=server)
    assert name in ok("experiments", "list", "--view", "deleted_only", server=server)
    assert name in ok("experiments", "list", "-v", "all", server=server)
    restored = ok("experiments", "restore", "--experiment-id", experiment_id, server=server)
    assert restored.splitlines()[1].split()[2] == "active"

    one_line_error(cli("experiments", "create", "-n", name, server=server), "already")
    one_line_error(
        cli("experiments", "get", "-n", f"missing-{name}", server=server), "no experiment named"
    )
    one_line_error(cli("experiments", "get", "-x", "999999999", server=server), "999999999")
    one_line_error(cli("experiments", "delete", "-x", "abc", server=server), "decimal digits")


def test_runs(server: ServerProcess) -> None:
    experiment = new_experiment(server)
    eid = experiment["experiment_id"]
    run = new_run(server, eid, "--run-name", "first")
    assert (run["experiment_id"], run["run_name"], run["status"], run["lifecycle_stage"]) == (
        eid, "first", "RUNNING", "active"
    )  # fmt: skip
    assert run["end_time"] is None and run["artifact_uri"].endswith(f"/{run['run_id']}/artifacts")
    second = new_run(server, eid)

    table = ok("runs", "get", "--run-id", run["run_id"], server=server).splitlines()
    assert table[0].split()[:3] == ["RUN", "ID", "EXPERIMENT"]
    assert table[1].split()[:5] == [run["run_id"], eid, "first", "RUNNING", "active"]
    unnamed = ok("runs", "get", "--run-id", second["run_id"], server=server).splitlines()[1]
    assert unnamed.split()[2] in ("-", second["run_name"] or "-")

    listed = json_lines(ok("runs", "list", "-x", eid, "--json", server=server))
    assert {r["run_id"] for r in listed} == {run["run_id"], second["run_id"]}
    assert run["run_id"] in ok("runs", "list", server=server)

    [ended] = json_lines(
        ok(
            "runs",
            "terminate",
            "--run-id",
            run["run_id"],
            "--status",
            "failed",
            "--json",
            server=server,
        )
    )
    assert ended["status"] == "FAILED" and ended["end_time"] >= ended["start_time"]
    finished = ok("runs", "terminate", "--run-id", second["run_id"], server=server)
    assert "FINISHED" in finished

    [deleted] = json_lines(ok("runs", "delete", "--run-id", run["run_id"], "--json", server=server))
    assert deleted["lifecycle_stage"] == "deleted"
    assert {
        r["run_id"] for r in json_lines(ok("runs", "list", "-x", eid, "--json", server=server))
    } == {second["run_id"]}
    everything = json_lines(ok("runs", "list", "-x", eid, "-v", "all", "--json", server=server))
    assert {r["run_id"] for r in everything} == {run["run_id"], second["run_id"]}
    [restored] = json_lines(
        ok("runs", "restore", "--run-id", run["run_id"], "--json", server=server)
    )
    assert restored["lifecycle_stage"] == "active"

    one_line_error(cli("runs", "get", "--run-id", uuid.uuid4().hex, server=server), "no run")
    one_line_error(cli("runs", "create", "-x", "999999999", server=server), "999999999")


# -- artifacts of a run -----------------------------------------------------------------------


def test_artifacts_of_a_run(server: ServerProcess, tmp_path: Path) -> None:
    run = new_run(server, new_experiment(server)["experiment_id"])
    rid = run["run_id"]
    digest = write_random(tmp_path / "model.bin", 200_000)
    for i in range(3):
        write_random(tmp_path / "imgs" / f"{i}.png", 100 + i)

    out = ok("artifacts", "log", "--run-id", rid, "--local-file", str(tmp_path / "model.bin"),
             "--artifact-path", "models", server=server)  # fmt: skip
    assert f"logged runs:/{rid}/models/model.bin" in out and digest in out
    out = ok("artifacts", "log", str(tmp_path / "model.bin"), "--artifact-path",
             f"runs:/{rid}/copy", server=server)  # fmt: skip
    assert f"runs:/{rid}/copy/model.bin" in out
    out = ok("artifacts", "log", "--local-dir", str(tmp_path / "imgs"), "--run-id", rid,
             "--artifact-path", "imgs", server=server)  # fmt: skip
    assert "logged 3 files" in out
    assert sha256_of(run_root(run) / "models" / "model.bin") == digest

    entries = json_lines(ok("artifacts", "list", "--run-id", rid, "-r", "--json", server=server))
    assert [e["path"] for e in entries] == [
        "copy", "copy/model.bin", "imgs", "imgs/0.png", "imgs/1.png", "imgs/2.png",
        "models", "models/model.bin",
    ]  # fmt: skip
    plain = ok("artifacts", "list", f"runs:/{rid}/models", server=server)
    assert plain.split() == ["195.3", "KiB", "models/model.bin"]
    same = ok("artifacts", "list", "--artifact-path", "models", "--run-id", rid, server=server)
    assert same == plain

    local = ok("artifacts", "download", "--run-id", rid, "--artifact-path", "models/model.bin",
               "--dst-path", str(tmp_path / "d1"), server=server).strip()  # fmt: skip
    assert Path(local) == tmp_path / "d1" / "models" / "model.bin"
    assert sha256_of(Path(local)) == digest
    tree = ok("artifacts", "download", f"runs:/{rid}/imgs", "--dst", str(tmp_path / "d2"),
              server=server).strip()  # fmt: skip
    assert sorted(p.name for p in Path(tree).iterdir()) == ["0.png", "1.png", "2.png"]
    whole = ok("artifacts", "download", "--artifact-uri", f"runs:/{rid}", "--dst",
               str(tmp_path / "d3"), server=server).strip()  # fmt: skip
    assert (Path(whole) / "copy" / "model.bin").is_file()

    assert ok("artifacts", "rm", "--run-id", rid, "copy", server=server).strip() == (
        f"deleted runs:/{rid}/copy"
    )
    assert ok("artifacts", "rm", f"runs:/{rid}/copy", server=server).strip() == (
        f"runs:/{rid}/copy did not exist"
    )
    assert not (run_root(run) / "copy").exists()
    assert (run_root(run) / "models").exists()

    # the run's paths are not the server root's
    one_line_error(cli("artifacts", "list", "models", server=server), "does not exist")
    # what a user can get wrong
    other = uuid.uuid4().hex
    one_line_error(cli("artifacts", "list", f"runs:/{rid}", "--run-id", other, server=server),
                   "pass one of them")  # fmt: skip
    one_line_error(cli("artifacts", "list", "--run-id", rid.upper(), server=server),
                   "32 lower-case hex")  # fmt: skip
    one_line_error(cli("artifacts", "list", f"runs://{rid}/x", server=server), "names a host")
    one_line_error(cli("artifacts", "list", f"runs:/{rid}/../x", server=server), "'..'")
    one_line_error(cli("artifacts", "list", "--run-id", other, server=server), other)
    both = cli("artifacts", "log", str(tmp_path / "model.bin"), "--local-file",
               str(tmp_path / "model.bin"), "--run-id", rid, server=server)  # fmt: skip
    assert both.returncode == 2 and "give one of them" in both.stderr
    assert cli("artifacts", "log", "--run-id", rid, server=server).returncode == 2
    assert cli("artifacts", "rm", "--run-id", rid, server=server).returncode == 2
    missing = cli("artifacts", "log", "--local-file", str(tmp_path / "nope"), server=server)
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    # a deleted run's artifacts can be read, not written, until it is restored
    ok("runs", "delete", "--run-id", rid, server=server)
    one_line_error(
        cli("artifacts", "log", str(tmp_path / "model.bin"), "--run-id", rid, server=server),
        "deleted",
    )
    one_line_error(cli("artifacts", "rm", f"runs:/{rid}/models", server=server), "deleted")
    assert "models/" in ok("artifacts", "list", "--run-id", rid, server=server)
    ok("runs", "restore", "--run-id", rid, server=server)
    ok("artifacts", "log", str(tmp_path / "model.bin"), "--run-id", rid, server=server)


def test_rm_of_a_run_root_deletes_all_its_artifacts(server: ServerProcess, tmp_path: Path) -> None:
    run = new_run(server, new_experiment(server)["experiment_id"])
    (tmp_path / "f.txt").write_text("x")
    ok("artifacts", "log", str(tmp_path / "f.txt"), "--run-id", run["run_id"], server=server)
    assert ok("artifacts", "rm", f"runs:/{run['run_id']}", server=server).startswith("deleted")
    assert ok("artifacts", "list", "--run-id", run["run_id"], server=server) == ""
    one_line_error(cli("artifacts", "rm", "", server=server), "required")


# -- garbage collection through the server ----------------------------------------------------


def test_gc_through_the_server(server: ServerProcess, tmp_path: Path) -> None:
    experiment = new_experiment(server)
    eid = experiment["experiment_id"]
    doomed, kept = new_run(server, eid), new_run(server, eid)
    (tmp_path / "f.txt").write_text("x")
    for run in (doomed, kept):
        ok("artifacts", "log", str(tmp_path / "f.txt"), "--run-id", run["run_id"], server=server)
    rid = doomed["run_id"]

    one_line_error(cli("gc", "--run-ids", rid, server=server), "not deleted")
    ok("runs", "delete", "--run-id", rid, server=server)
    one_line_error(cli("gc", "--run-ids", rid, "--older-than", "1h", server=server),
                   "too recently")  # fmt: skip

    dry = ok("gc", "--run-ids", rid, "--dry-run", "--server", server.target).splitlines()
    assert dry == [
        f"would collect run {rid} ({doomed['artifact_uri']})",
        "dry run: would collect 1 run and 0 experiments; 0 skipped, 0 failed",
    ]
    assert (run_root(doomed) / "f.txt").is_file()

    done = ok("gc", "--run-ids", f" {rid}, ", "--older-than", "0s", server=server).splitlines()
    assert done == [
        f"collected run {rid} ({doomed['artifact_uri']})",
        "collected 1 run and 0 experiments; 0 skipped, 0 failed",
    ]
    assert not run_root(doomed).exists()
    one_line_error(cli("runs", "get", "--run-id", rid, server=server), "no run")
    again = ok("gc", "--run-ids", rid, server=server).splitlines()
    assert again[-1] == "collected 0 runs and 0 experiments; 1 skipped, 0 failed"

    # a deleted experiment goes with all its runs
    ok("experiments", "delete", "-x", eid, server=server)
    items = json_lines(ok("gc", "--experiment-ids", eid, "--json", server=server))
    assert [(i["type"], i.get("kind"), i.get("id"), i.get("outcome")) for i in items[:-1]] == [
        ("event", "run", kept["run_id"], "collected"),
        ("event", "experiment", eid, "collected"),
    ]
    assert items[-1] == {
        "type": "summary", "runs_collected": 1, "experiments_collected": 1,
        "skipped": 0, "failed": 0, "dry_run": False,
    }  # fmt: skip
    assert not run_root(kept).exists()
    one_line_error(cli("experiments", "get", "-x", eid, server=server), eid)


# -- garbage collection without a server, and db upgrade --------------------------------------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server whose backend store the test knows, for `gc` without a server."""
    base = tmp_path_factory.mktemp("gc-direct")
    uri = f"sqlite:///{base / 'store.db'}"
    process = start_server(base / "root", base / "run", "--backend-store-uri", uri)
    yield process, uri
    assert process.stop() == 0, process.log_text()


def test_gc_without_a_server(own_server: tuple[ServerProcess, str], tmp_path: Path) -> None:
    server, uri = own_server
    experiment = new_experiment(server)
    runs = [new_run(server, experiment["experiment_id"]) for _ in range(2)]
    (tmp_path / "f.txt").write_text("x")
    for run in runs:
        ok("artifacts", "log", str(tmp_path / "f.txt"), "--run-id", run["run_id"], server=server)
        ok("runs", "delete", "--run-id", run["run_id"], server=server)
    first, second = (r["run_id"] for r in runs)
    direct = ("--backend-store-uri", uri, "--artifacts-destination", str(server.root))

    # a root that is not the server's: the run cannot be collected; its record is kept
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    failed = cli("gc", "--run-ids", first, "--backend-store-uri", uri,
                 "--artifacts-destination", str(elsewhere))  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.splitlines()[0].startswith(f"FAILED run {first}")
    assert (
        failed.stdout.splitlines()[-1] == "collected 0 runs and 0 experiments; 0 skipped, 1 failed"
    )
    assert "could not be collected" in failed.stderr and "Traceback" not in failed.stderr
    assert (run_root(runs[0]) / "f.txt").is_file()

    dry = ok("gc", "--run-ids", first, "--dry-run", *direct).splitlines()
    assert dry[-1] == "dry run: would collect 1 run and 0 experiments; 0 skipped, 0 failed"
    # store flags given on the command line win over ARTIFACTD_SERVER from the environment
    done = ok("gc", "--run-ids", first, *direct, env={"ARTIFACTD_SERVER": "127.0.0.1:1"})
    assert done.splitlines() == [
        f"collected run {first} ({runs[0]['artifact_uri']})",
        "collected 1 run and 0 experiments; 0 skipped, 0 failed",
    ]
    assert not run_root(runs[0]).exists()
    one_line_error(cli("runs", "get", "--run-id", first, server=server), "no run")

    # configured by the environment, as `artifactd serve` is
    env = {"ARTIFACTD_BACKEND_STORE_URI": uri, "ARTIFACTD_ARTIFACTS_DESTINATION": str(server.root)}
    done = ok("gc", "--older-than", "1.5d", env=env)
    assert done.splitlines() == ["collected 0 runs and 0 experiments; 0 skipped, 0 failed"]
    done = ok("gc", env=env)
    assert f"collected run {second}" in done
    assert not run_root(runs[1]).exists()

    clash = cli("gc", "--server", server.target, "--backend-store-uri", uri)
    assert clash.returncode == 2 and "give one or the other" in clash.stderr


def test_db_upgrade(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    first = ok("db", "upgrade", "--backend-store-uri", uri).strip()
    assert first.startswith(f"backend store {uri}: schema upgraded from revision (none) to ")
    head = first.rsplit(" ", 1)[1]
    again = ok("db", "upgrade", env={"ARTIFACTD_BACKEND_STORE_URI": uri}).strip()
    assert again == f"backend store {uri}: schema already at revision {head}"
    one_line_error(cli("db", "upgrade", "--backend-store-uri", "not-a-uri"), "not a database URI")
    secret = cli("db", "upgrade", "--backend-store-uri", "postgresql://u:hunter2@127.0.0.1:1/db")
    one_line_error(secret, "127.0.0.1")
    assert "hunter2" not in secret.stderr
    missing = cli("db", "upgrade", env={"ARTIFACTD_BACKEND_STORE_URI": ""})
    assert missing.returncode == 2


# -- usage, without a server ------------------------------------------------------------------


def test_mistakes_without_a_server(tmp_path: Path) -> None:
    nowhere = {"ARTIFACTD_SERVER": "127.0.0.1:1", "ARTIFACTD_MAX_RETRIES": "0"}
    usage = [
        (("gc", "--older-than", "1x"), "#d#h#m#s"),
        (("gc", "--older-than", "2h1d"), "in the order d, h, m, s"),
        (("gc", "--run-ids", "abc,"), "32 lower-case hex"),
        (("gc", "--experiment-ids", "1,x"), "'x'"),
        (("experiments", "get"), "give one of"),
        (("experiments", "get", "-x", "1", "-n", "a"), "give one of"),
        (("experiments", "create"), "--experiment-name"),
        (("experiments", "list", "--view", "some"), "active_only"),
        (("runs", "terminate", "--run-id", "0" * 32, "--status", "RUNNING"), "killed"),
        (("runs", "create"), "--experiment-id"),
        (("artifacts", "log"), "LOCAL_PATH"),
        (("artifacts", "rm"), "PATH"),
        (("artifacts", "download", "a", "--artifact-path", "b"), "give one of them"),
    ]
    for args, needle in usage:
        done = cli(*args, env=nowhere)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        # case-insensitive: click 8.1 lists choices as declared, later versions in lower case
        assert needle.lower() in done.stderr.lower(), (args, done.stderr)
    refused = [
        (("runs", "get", "--run-id", "nope"), "32 lower-case hex"),
        (("runs", "delete", "--run-id", "A" * 32), "32 lower-case hex"),
        (("experiments", "restore", "-x", "1.0"), "decimal digits"),
        (("artifacts", "list", "--run-id", "nope"), "32 lower-case hex"),
        (("artifacts", "download", "runs:/nope/x"), "not a run id"),
        (("runs", "list"), "unavailable"),
        (("experiments", "list"), "unavailable"),
        (("gc", "--server", "127.0.0.1:1"), "unavailable"),
    ]
    for args, needle in refused:
        one_line_error(cli(*args, env=nowhere), needle)


def test_commands_are_listed_and_loaded_lazily() -> None:
    listed = ok("--help")
    for command in ("artifacts", "experiments", "runs", "gc", "db", "health", "serve"):
        assert f"  {command} " in listed
    probe = (
        "import sys\n"
        "from artifactd.cli.main import cli\n"
        "try:\n"
        "    cli(['artifacts', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in ('artifactd.cli.tracking', 'artifactd.cli.gc', 'artifactd.cli.db',\n"
        "          'artifactd_server', 'sqlalchemy') if m in sys.modules]\n"
        "print('loaded:', loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TOP / "server"), str(TOP / "client")])},
    )  # fmt: skip
    assert "loaded: []" in done.stdout, (done.stdout, done.stderr)


def test_a_transfer_without_a_terminal_imports_no_progress_bar(
    server: ServerProcess, tmp_path: Path
) -> None:
    """tqdm and the error-detail messages cost a CLI command 30 ms of start-up: a transfer
    whose stderr is not a terminal shows no bar and, when nothing fails, reads no detail.
    The crc32c package costs another 13-17 ms: small files are sent with a sha256."""
    write_random(tmp_path / "imgs" / "a.bin", 10_000)
    write_random(tmp_path / "imgs" / "b.bin", 20_000)
    probe = (
        "import sys\n"
        "from artifactd.cli.main import cli\n"
        "try:\n"
        "    cli(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "lazy = ('tqdm', 'google.rpc.error_details_pb2', 'crc32c')\n"
        "print('loaded:', [m for m in lazy if m in sys.modules])\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TOP / "server"), str(TOP / "client")]),
        "ARTIFACTD_SERVER": server.target,
    }
    commands = [
        ["artifacts", "log", str(tmp_path / "imgs"), "--artifact-path", "lazy"],
        ["artifacts", "download", "lazy", "--dst", str(tmp_path / "back")],
    ]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-c", probe, *command],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        assert "loaded: []" in done.stdout, (command, done.stdout, done.stderr)
    back = tmp_path / "back" / "lazy"
    assert sorted(p.name for p in back.iterdir()) == ["a.bin", "b.bin"]


def test_cli_lifecycle_and_gc_on_every_backend_store(
    store_server: ServerProcess, database_uri: str, tmp_path: Path
) -> None:
    """The CLI's whole lifecycle against a server on SQLite, PostgreSQL and MariaDB, and `gc`
    both through that server and directly on the same database."""
    server = store_server
    experiment = new_experiment(server)
    runs = [new_run(server, experiment["experiment_id"]) for _ in range(2)]
    write_random(tmp_path / "model.bin", 100_000)
    for run in runs:
        ok("artifacts", "log", "--run-id", run["run_id"], str(tmp_path / "model.bin"),
           "--artifact-path", "model", server=server)  # fmt: skip
    listed = json_lines(ok("artifacts", "list", f"runs:/{runs[0]['run_id']}/model", "--json",
                           server=server))  # fmt: skip
    assert [(f["path"], f["file_size"]) for f in listed] == [("model/model.bin", 100_000)]
    ok("artifacts", "download", f"runs:/{runs[0]['run_id']}/model", "--dst", str(tmp_path / "out"),
       server=server)  # fmt: skip
    assert sha256_of(tmp_path / "out" / "model" / "model.bin") == sha256_of(tmp_path / "model.bin")

    ok("experiments", "delete", "-x", experiment["experiment_id"], server=server)
    deleted = json_lines(ok("runs", "list", "-x", experiment["experiment_id"], "--view",
                            "deleted_only", "--json", server=server))  # fmt: skip
    assert sorted(r["run_id"] for r in deleted) == sorted(r["run_id"] for r in runs)
    ok("experiments", "restore", "-x", experiment["experiment_id"], server=server)
    for run in runs:
        ok("runs", "delete", "--run-id", run["run_id"], server=server)

    first, second = (r["run_id"] for r in runs)
    through = ok("gc", "--run-ids", first, "--server", server.target)
    assert through.splitlines()[-1] == "collected 1 run and 0 experiments; 0 skipped, 0 failed"
    assert not run_root(runs[0]).exists()
    extra_root = server.root.parent / "extra-root"
    direct = ok("gc", "--run-ids", second, "--backend-store-uri", database_uri,
                "--artifacts-destination", str(server.root),
                "--extra-artifact-root", str(extra_root))  # fmt: skip
    assert direct.splitlines()[-1] == "collected 1 run and 0 experiments; 0 skipped, 0 failed"
    assert not run_root(runs[1]).exists()
    assert run_root(runs[1]).parent.parent.is_dir()  # the active experiment's folder stays
