"""The artifactd CLI end to end, as a user runs it: subprocesses against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import sha256_of, write_random
from servers import ServerProcess, run_cli


def cli(
    *args: str, server: ServerProcess | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = dict(env or {})
    if server is not None:
        full_env["ARTIFACTD_SERVER"] = server.target
    with tempfile.TemporaryDirectory(prefix="artifactd-cli-") as cwd:  # for a default store
        return run_cli(*args, env=full_env, cwd=cwd, timeout=120)


def test_log_list_download_rm(server: ServerProcess, prefix: str, tmp_path: Path) -> None:
    big = tmp_path / "model.bin"
    digest = write_random(big, 2 * 1024 * 1024)
    src = tmp_path / "imgs"
    for i in range(20):
        write_random(src / f"batch{i % 2}" / f"{i}.png", 1000 + i)

    done = cli("artifacts", "log", str(big), "--artifact-path", f"{prefix}/m", server=server)
    assert done.returncode == 0, done.stderr
    assert f"logged {prefix}/m/model.bin" in done.stdout and digest in done.stdout
    done = cli("artifacts", "log", str(src), "--artifact-path", f"{prefix}/imgs", server=server)
    assert done.returncode == 0, done.stderr
    assert "logged 20 files" in done.stdout

    listed = cli("artifacts", "list", prefix, "--recursive", "--json", server=server)
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len([e for e in entries if not e["is_dir"]]) == 21
    assert {"path": f"{prefix}/m/model.bin", "sha256": digest} == {
        k: v
        for k, v in next(e for e in entries if e["path"].endswith("model.bin")).items()
        if k in ("path", "sha256")
    }
    plain = cli("artifacts", "list", prefix, server=server)
    assert plain.stdout.splitlines() == [f"         -  {prefix}/imgs/", f"         -  {prefix}/m/"]

    out = cli(
        "artifacts",
        "download",
        f"{prefix}/m/model.bin",
        "--dst",
        str(tmp_path / "d1"),
        server=server,
    )
    assert out.returncode == 0, out.stderr
    assert sha256_of(Path(out.stdout.strip())) == digest
    out = cli(
        "artifacts", "download", f"{prefix}/imgs", "--dst", str(tmp_path / "d2"), server=server
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in Path(out.stdout.strip()).rglob("*.png")) == sorted(
        f"{i}.png" for i in range(20)
    )

    gone = cli("artifacts", "rm", f"{prefix}/imgs", server=server)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    again = cli("artifacts", "rm", f"{prefix}/imgs", server=server)
    assert again.returncode == 0 and "did not exist" in again.stdout


def test_uri_form_and_server_flag(server: ServerProcess, prefix: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    uri = f"artifactd://{server.target}/{prefix}"
    done = cli(
        "artifacts",
        "log",
        str(tmp_path / "a.txt"),
        "--artifact-path",
        uri,
        "--server",
        "127.0.0.1:1",
    )
    assert done.returncode == 0, done.stderr
    listed = cli("artifacts", "list", prefix, "--server", server.target)
    assert f"{prefix}/a.txt" in listed.stdout


def test_user_mistakes_are_one_line_errors(
    server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    cases = [
        (("artifacts", "download", "../etc/passwd"), "'..'"),
        (("artifacts", "list", f"{prefix}/missing"), "does not exist"),
        (("artifacts", "download", "s3://bucket/key"), "configured on the artifactd server"),
        (("artifacts", "rm", ""), "required"),
    ]
    for args, needle in cases:
        done = cli(*args, server=server)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert needle in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    missing = cli("artifacts", "log", str(tmp_path / "nope"), server=server)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_unreachable_server(tmp_path: Path) -> None:
    done = cli(
        "artifacts", "list", env={"ARTIFACTD_SERVER": "127.0.0.1:1", "ARTIFACTD_MAX_RETRIES": "0"}
    )
    assert done.returncode == 1
    assert "unavailable" in done.stderr and "Traceback" not in done.stderr


def test_storage_variable_warning_is_one_line(server: ServerProcess, prefix: str) -> None:
    done = cli(
        "artifacts", "list", server=server, env={"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9/b"}
    )
    assert done.returncode == 0
    assert done.stderr.count("MLFLOW_S3_ENDPOINT_URL") == 1
    strict = cli(
        "artifacts",
        "list",
        server=server,
        env={"MLFLOW_S3_ENDPOINT_URL": "http://x", "ARTIFACTD_STRICT_ENV": "1"},
    )
    assert strict.returncode == 1 and "strict mode" in strict.stderr


def test_serve_rejects_bad_configuration(tmp_path: Path) -> None:
    done = cli("serve", "--artifacts-destination", "hdfx://namenode/prefix", "--port", "0")
    assert done.returncode == 1
    assert "unsupported artifacts destination scheme" in done.stderr
    # Checked before any connection is made (the endpoint is never contacted).
    endpoint = {"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9/bucket"}
    done = cli(
        "serve", "--artifacts-destination", "s3://bucket/prefix", "--port", "0", env=endpoint
    )
    assert done.returncode == 1
    assert "must be only scheme://host[:port]" in done.stderr and "Traceback" not in done.stderr


def test_health_command(server: ServerProcess) -> None:
    done = cli("health", server=server)
    assert (done.returncode, done.stdout.strip()) == (0, "SERVING")
    down = cli("health", "--timeout", "0.5", env={"ARTIFACTD_SERVER": "127.0.0.1:1"})
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


def test_serve_configured_by_environment_only(tmp_path: Path) -> None:
    """What the container image runs: `artifactd serve` with ARTIFACTD_* variables, no flags."""
    import signal
    import time

    port_file = tmp_path / "port"
    top = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(top / "server"), str(top / "client")]),
        "ARTIFACTD_HOST": "127.0.0.1",
        "ARTIFACTD_PORT": "0",
        "ARTIFACTD_ARTIFACTS_DESTINATION": str(tmp_path / "data"),
        "ARTIFACTD_PORT_FILE": str(port_file),
        "ARTIFACTD_GRACE_PERIOD": "5",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "artifactd.cli.main", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )  # fmt: skip  (the default SQLite store lands there)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        health = cli("health", env={"ARTIFACTD_SERVER": target})
        assert health.returncode == 0, health.stderr
        assert (tmp_path / "data").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_output_cut_short_by_its_reader_is_no_error(
    server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    """`artifactd artifacts list --recursive | head`: the listing outgrows the pipe, head leaves,
    and the CLI stops quietly instead of printing "error: Broken pipe"."""
    src = tmp_path / "many"
    src.mkdir()
    for i in range(3000):
        (src / f"file-with-a-longish-name-{i:05d}.txt").write_bytes(b"")
    assert (
        cli("artifacts", "log", str(src), "--artifact-path", prefix, server=server).returncode == 0
    )
    env = {**os.environ, "ARTIFACTD_SERVER": server.target}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent / d)
                                         for d in ("server", "client")])  # fmt: skip
    listing = subprocess.Popen(
        [sys.executable, "-m", "artifactd.cli.main", "artifacts", "list", prefix, "--recursive"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert listing.stdout is not None and listing.stderr is not None
    first = listing.stdout.readline()
    listing.stdout.close()  # what head does after its lines
    code = listing.wait(60)
    errors = listing.stderr.read().decode()
    assert b"file-with-a-longish-name" in first
    assert code == 141, (code, errors)
    assert errors == "", errors
