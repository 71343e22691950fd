"""The two distributions as a user installs them: built into wheels from this tree and installed
into fresh virtual environments (dependencies from the package index).

- `artifactd` (client/) holds only the client's packages, installs light (no storage SDK, no
  database driver, no server) and its CLI starts fast;
- `artifactd-server` (server/) holds only `artifactd_server`; no module is in both;
- with only the client, `artifactd serve` says which distribution to install;
- with the server but not an extra, a destination or database needing it fails at start-up
  with one line naming the extra, and no traceback.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
HEAVY = {
    "boto3", "botocore", "google-cloud-storage", "azure-storage-blob", "paramiko", "pyarrow",
    "sqlalchemy", "alembic", "psycopg", "psycopg-binary", "pymysql", "artifactd-server",
}  # fmt: skip
CLIENT_BUDGET = 40 * 1024 * 1024
HELP_BUDGET = 0.25  # seconds, median of several `artifactd --help`


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The test venv's pip acting on `python`'s environment (no pip inside the new ones)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check",
         "-q", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result


def _size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file() and not f.is_symlink())


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def _installed(python: Path) -> set[str]:
    listing = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m;"
         "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {name.strip().lower().replace("_", "-") for name in listing.stdout.split()}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    _pip(Path(sys.executable), "wheel", "--no-deps", "-w", str(out), str(TOP / "client"),
         str(TOP / "server"))  # fmt: skip
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(found) == {"artifactd", "artifactd_server"}, sorted(found)
    return found


def _modules(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            name for name in archive.namelist()
            if name.endswith((".py", ".pyi")) and ".dist-info/" not in name
        }  # fmt: skip


def test_each_distribution_ships_its_own_tree_and_nothing_is_in_both(
    wheels: dict[str, Path],
) -> None:
    client, server = _modules(wheels["artifactd"]), _modules(wheels["artifactd_server"])
    assert not client & server
    assert all(name.startswith("artifactd/") for name in client), sorted(client)[:5]
    assert all(name.startswith("artifactd_server/") for name in server), sorted(server)[:5]
    # every source file of each tree is in its wheel (a package missing from a wheel would only
    # show in an installed environment)
    for tree, shipped in ((TOP / "client", client), (TOP / "server", server)):
        sources = {
            str(path.relative_to(tree)) for path in tree.rglob("*.py")
            if path.relative_to(tree).parts[0] in ("artifactd", "artifactd_server")
        }  # fmt: skip
        assert sources <= shipped, sorted(sources - shipped)
    with zipfile.ZipFile(wheels["artifactd_server"]) as archive:
        names = archive.namelist()
        assert "artifactd_server/store/migrations/script.py.mako" in names
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    client_version = wheels["artifactd"].name.split("-")[1]
    assert f"Requires-Dist: artifactd=={client_version}" in metadata, "same version of the client"


@pytest.fixture(scope="module")
def client_only(
    wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A fresh virtualenv with the client wheel and its dependencies, nothing else."""
    home = tmp_path_factory.mktemp("client-venv")
    python = _venv(home / "venv")
    empty = _size(home / "venv")
    _pip(python, "install", str(wheels["artifactd"]))
    added = _size(home / "venv") - empty
    (home / "added").write_text(str(added))
    yield python


def test_the_client_installs_light_and_without_server_dependencies(client_only: Path) -> None:
    added = int((client_only.parent.parent.parent / "added").read_text())
    installed = _installed(client_only)
    assert not installed & HEAVY, sorted(installed & HEAVY)
    assert added <= CLIENT_BUDGET, f"the client adds {added / 2**20:.1f} MiB (> 40 MiB)"
    print(f"client: {added / 2**20:.1f} MiB, {len(installed)} distributions: {sorted(installed)}")
    # what a training job imports works without the server (the MLflow plugin needs mlflow)
    check = subprocess.run(
        [str(client_only), "-c", "import artifactd.client, artifactd.cli.main;"
         "import sys; assert not [m for m in sys.modules if m.startswith('artifactd_server')]"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_the_client_cli_starts_fast_and_imports_no_server(client_only: Path) -> None:
    artifactd = client_only.parent / "artifactd"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    subprocess.run([str(artifactd), "--help"], capture_output=True, check=True, env=env)  # warm
    times = []
    for _ in range(7):
        started = time.perf_counter()
        subprocess.run([str(artifactd), "--help"], capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"artifactd --help: median {median * 1000:.0f} ms of {len(times)}")
    assert median < HELP_BUDGET, f"`artifactd --help` took {median:.2f} s (median)"
    # --help imports neither grpc nor the server (every command is imported only when it runs)
    imported = subprocess.run(
        [str(client_only), "-c", "import sys, contextlib\n"
         "from artifactd.cli.main import cli\n"
         "with contextlib.suppress(SystemExit): cli(['--help'])\n"
         "heavy = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'artifactd_server')]\n"
         "print('imported:', *heavy, file=sys.stderr)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert imported.stderr.strip() == "imported:", imported.stderr


@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"]])
def test_server_commands_without_the_server_name_it(client_only: Path, command: list[str]) -> None:
    result = subprocess.run(
        [str(client_only.parent / "artifactd"), *command], capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pip install artifactd-server" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_direct_gc_without_the_server_names_it(client_only: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(client_only.parent / "artifactd"), "gc", "--backend-store-uri",
         f"sqlite:///{tmp_path}/db"],
        capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "ARTIFACTD_SERVER"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "pip install artifactd-server" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def server_no_extras(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("server-venv")
    python = _venv(home / "venv")
    _pip(python, "install", str(wheels["artifactd"]), str(wheels["artifactd_server"]))
    installed = _installed(python)
    missing = {"boto3", "google-cloud-storage", "azure-storage-blob", "paramiko", "pyarrow",
               "psycopg", "pymysql"} & installed  # fmt: skip
    assert not missing, f"installed without being asked for: {sorted(missing)}"
    return python


@pytest.mark.parametrize(
    ("option", "value", "extra"),
    [
        ("--artifacts-destination", "s3://bucket/prefix", "s3"),
        ("--artifacts-destination", "gs://bucket/prefix", "gcs"),
        ("--artifacts-destination", "wasbs://c@account.blob.core.windows.net/p", "azure"),
        ("--artifacts-destination", "sftp://user@127.0.0.1/path", "sftp"),
        ("--artifacts-destination", "hdfs://127.0.0.1:1/path", "hdfs"),
        ("--backend-store-uri", "postgresql://user@127.0.0.1:1/db", "postgres"),
        ("--backend-store-uri", "mysql://user@127.0.0.1:1/db", "mysql"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    server_no_extras: Path, tmp_path: Path, option: str, value: str, extra: str
) -> None:
    result = subprocess.run(
        [str(server_no_extras.parent / "artifactd"), "serve", "--host", "127.0.0.1", "--port", "0",
         "--metrics-port", "0", option, value],
        capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0, result.stderr
    assert f"pip install 'artifactd-server[{extra}]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "artifactd-server[" in line]
    assert len(errors) == 1, result.stderr


def test_the_server_without_extras_serves_local_disk_and_sqlite(
    server_no_extras: Path, tmp_path: Path
) -> None:
    """Local disk and SQLite need no extra: the server starts, stores a file and stops cleanly."""
    artifactd = server_no_extras.parent / "artifactd"
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [str(artifactd), "serve", "--host", "127.0.0.1", "--port", "0", "--port-file",
         str(port_file), "--metrics-port", "0", "--artifacts-destination", str(tmp_path / "root")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.1)
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        (tmp_path / "hello.txt").write_text("hello")
        for args in (
            ["health"],
            ["artifacts", "log", str(tmp_path / "hello.txt"), "--artifact-path", "a"],
        ):
            done = subprocess.run(
                [str(artifactd), *args, "--server", target], capture_output=True, text=True,
                check=False, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        assert (tmp_path / "root" / "a" / "hello.txt").read_text() == "hello"
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0
