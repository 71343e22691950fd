"""artifactd vs MLflow's proxied artifact server vs cp, side by side in the same rounds.

    python3 bench/run_bench.py                            # 3 rounds, 1 GiB, 1000 x 16 KiB
    RUNS=1 SIZE=64MiB COUNT=50 python3 bench/run_bench.py # smoke run, about a minute

Stdlib only: the clients run in their own virtual environments (`artifactd_ops.py` in artifactd's,
`mlflow_ops.py` in MLflow's) and report their own timing, so neither package's import cost nor its
dependencies leak into the other's figures. See bench/README.md for what is printed and why the
rounds are arranged as they are.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchutil import BENCH_LINE, check_download, parse_size
from proctree import TreeUsage, TreeWatch, stop_tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SYSTEMS = ("cp", "cp_fsync", "artifactd", "artifactd_cli", "mlflow")
NAMES = {
    "cp": "cp",
    "cp_fsync": "cp + fsync",
    "artifactd": "artifactd",
    "artifactd_cli": "artifactd CLI",
    "mlflow": "MLflow",
}
UPLOADS_ONLY = {"cp_fsync"}
"""cp + fsync is the durable-write limit of this disk: a baseline for uploads only."""
SERVER_OF = {"cp_fsync": "cp", "artifactd_cli": "artifactd"}
"""Systems that share another's store (and server)."""
KINDS = ("up", "down", "up_dir", "down_dir")
CONCURRENT_LABEL = "artifactd_up_concurrent"
CLIENTS_LABEL = "artifactd_up_clients"
ONE_CLIENT_LABEL = "artifactd_up_one_client"
CLIENT_SIZE = 256 * 2**20
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
"""The MLflow client and server would otherwise report usage over the network in the middle of
timed operations."""

TARGETS = (("up", 2.0), ("down", 3.0), ("up_dir", 25.0), ("down_dir", 40.0))
"""artifactd ÷ MLflow throughput, median of the per-round ratios (issue 21)."""
LOADED_TARGETS = (("up", 1.5), ("down", 2.0))
"""The same with HOG busy processes beside the benchmark."""
CP_FSYNC_TARGET = 0.7
"""1 GiB upload: artifactd ÷ cp + fsync of the same file."""
CPU_TARGETS = {"up": 2.0, "down": 1.5}
"""CPU seconds per GiB, client + server."""
CLIENTS_TARGET = 1.5
"""8 clients' aggregate upload throughput ÷ one client's."""
RSS_TARGET_BYTES = 200 * 10**6
DASH, TIMES = "\u2013", "\u00d7"  # typographic, for the Markdown tables


@dataclass(frozen=True)
class Settings:
    runs: int
    warmup: int
    size: int
    count: int
    file_size: int
    settle: float
    concurrent: int
    tmp: Path
    results: Path
    artifactd_venv: Path
    mlflow_venv: Path
    mlflow_pip_spec: str
    keep_inputs: bool
    defer_deletes: bool
    hog: int
    clients: int
    env_text: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        text = {
            "RUNS": env("RUNS", "3"),
            "SIZE": env("SIZE", "1GiB"),
            "COUNT": env("COUNT", "1000"),
            "FILE_SIZE": env("FILE_SIZE", "16KiB"),
            "BENCH_SETTLE": env("BENCH_SETTLE", "3"),
        }
        return cls(
            runs=int(text["RUNS"]),
            warmup=int(env("WARMUP", "1")),
            size=parse_size(text["SIZE"]),
            count=int(text["COUNT"]),
            file_size=parse_size(text["FILE_SIZE"]),
            settle=float(text["BENCH_SETTLE"]),
            concurrent=int(env("CONCURRENT", "4")),
            tmp=Path(env("BENCH_TMP", "/tmp/artifactd-bench")),
            results=Path(env("BENCH_RESULTS", str(HERE / "results"))),
            artifactd_venv=Path(env("ARTIFACTD_VENV", str(REPO / ".venv"))),
            mlflow_venv=Path(env("MLFLOW_VENV", "/tmp/bench-venv-mlflow")),
            mlflow_pip_spec=env("MLFLOW_PIP_SPEC", "mlflow==3.17.2"),
            keep_inputs=env("KEEP_INPUTS", "0") == "1",
            defer_deletes=env("BENCH_DEFER_DELETES", "1") == "1",
            hog=int(env("HOG", "0")),
            clients=int(env("CLIENTS", "8")),
            env_text=text,
        )

    def command_line(self) -> str:
        """The exact invocation, so a pasted table says how to reproduce it."""
        extra = {
            key: os.environ[key]
            for key in (
                "WARMUP",
                "CONCURRENT",
                "CLIENTS",
                "HOG",
                "ARTIFACTD_FSYNC",
                "BENCH_DEFER_DELETES",
            )
            if key in os.environ
        }
        pairs = " ".join(f"{k}={v}" for k, v in {**self.env_text, **extra}.items())
        return f"{pairs} python3 bench/run_bench.py"

    @property
    def big(self) -> Path:
        return self.tmp / "inputs" / "big.bin"

    @property
    def small(self) -> Path:
        return self.tmp / "inputs" / "small"


@dataclass
class Sample:
    label: str
    round: int
    seconds: float
    wall_s: float
    bytes: int
    files: int
    client_cpu_s: float
    server: TreeUsage | None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# -- set-up ----------------------------------------------------------------------------------


def ensure_mlflow(s: Settings) -> None:
    """Creates MLflow's venv on first use, apart so its dependencies cannot touch artifactd's."""
    if (s.mlflow_venv / "bin" / "mlflow").exists():
        return
    log(f"creating {s.mlflow_venv} with {s.mlflow_pip_spec} (one-off, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(s.mlflow_venv)], check=True)
    pip = str(s.mlflow_venv / "bin" / "pip")
    subprocess.run([pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "-q", *s.mlflow_pip_spec.split()], check=True)


def byte_compile_artifactd(s: Settings) -> None:
    """Writes the bytecode of the artifactd packages the bench imports, as `pip install` does
    for a regular install (README, `scripts/serve.sh`). Run from an editable install (or
    PYTHONPATH) with PYTHONDONTWRITEBYTECODE set, every CLI command would otherwise compile
    about 40 modules again, 50-60 ms here that no installed user pays; MLflow's venv is a
    regular install, compiled already."""
    code = (
        "import compileall, os, artifactd, artifactd_server\n"
        "for package in (artifactd, artifactd_server):\n"
        "    for folder in package.__path__:  # an editable install adds its finder's hook\n"
        "        if os.path.isdir(folder):\n"
        "            compileall.compile_dir(folder, quiet=1)\n"
    )
    subprocess.run([str(s.artifactd_venv / "bin" / "python"), "-c", code], check=True)


def make_inputs(s: Settings) -> None:
    """Random, so nothing on the path can win by compressing; reused only if already right."""
    s.big.parent.mkdir(parents=True, exist_ok=True)
    for path, size in ((s.big, s.size), (s.tmp / "inputs" / "client.bin", CLIENT_SIZE)):
        if path.exists() and path.stat().st_size == size:
            continue
        log(f"writing {path} ({human_size(size)} from os.urandom)")
        with open(path, "wb") as fh:
            left = size
            while left:
                block = os.urandom(min(left, 16 << 20))
                fh.write(block)
                left -= len(block)
    names = [f"f{i:05d}.bin" for i in range(s.count)]
    sizes_ok = (
        s.small.is_dir()
        and sorted(os.listdir(s.small)) == names
        and all((s.small / n).stat().st_size == s.file_size for n in names)
    )
    if not sizes_ok:
        log(f"writing {s.small} ({s.count} x {human_size(s.file_size)})")
        shutil.rmtree(s.small, ignore_errors=True)
        s.small.mkdir()
        for name in names:
            (s.small / name).write_bytes(os.urandom(s.file_size))
    os.sync()


def versions(s: Settings) -> dict[str, str]:
    def out(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "?"

    return {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "artifactd_git": out(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "artifactd_fsync": os.environ.get("ARTIFACTD_FSYNC", "on, the default"),
        "mlflow": out(
            [
                str(s.mlflow_venv / "bin" / "python"),
                "-c",
                "import mlflow; print(mlflow.__version__)",
            ]
        ),
        "cp": out(["cp", "--version"]),
    }


# -- servers ---------------------------------------------------------------------------------


class Trash:
    """Deletes the harness's scratch files at the end of the run instead of between commands.

    This machine's root filesystem is ext4 without a journal, and ext4 then passes over inodes
    freed in the last minute (five while their inode-table block is still dirty) when it
    allocates a new one, checking each in turn: after the harness had deleted a few thousand
    files, creating 1,000 files cost 0.55-0.8 s of system CPU instead of 0.06 s, whoever created
    them. That cost is the harness's cleanup, not the tool's work; as with write-back (the sync
    after each command), the next command must not pay for it. Renaming a tree away frees no
    inode. Files of 1 MiB and more are unlinked at once: a handful of inodes costs nothing
    measurable, and keeping gigabytes until the end would need several times the disk.
    `BENCH_DEFER_DELETES=0` deletes at once, as the harness did before, to compare.
    """

    BIG = 1 << 20

    def __init__(self, root: Path, *, defer: bool) -> None:
        self.root = root
        self.defer = defer
        self.count = 0

    def discard(self, path: Path) -> None:
        if not path.exists() and not path.is_symlink():
            return
        if not self.defer:
            self._delete(path)
            return
        if path.is_dir() and not path.is_symlink():
            for folder, _, names in os.walk(path):
                for name in names:
                    self._unlink_if_big(Path(folder) / name)
        elif self._unlink_if_big(path):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.count += 1
        try:
            path.rename(self.root / f"{self.count:06d}")
        except OSError:  # another filesystem: nothing to gain, delete now
            self._delete(path)

    @staticmethod
    def _delete(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _unlink_if_big(self, path: Path) -> bool:
        try:
            big = not path.is_symlink() and path.stat().st_size >= self.BIG
        except FileNotFoundError:
            return False
        if big:
            path.unlink(missing_ok=True)
        return big

    def empty(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Servers:
    """artifactd and `mlflow server` on 127.0.0.1, each in its own session, stopped by PID."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.artifactd_store = s.tmp / "artifactd-store"
        self.mlflow_dir = s.tmp / "mlflow-server"
        self.cp_store = s.tmp / "cp-store"
        self.artifactd: subprocess.Popen[bytes] | None = None
        self.mlflow: subprocess.Popen[bytes] | None = None
        self.artifactd_target = ""
        self.mlflow_uri = ""
        self.trash = Trash(s.tmp / "trash", defer=s.defer_deletes)

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    def pid(self, system: str) -> int | None:
        system = SERVER_OF.get(system, system)
        proc = {"artifactd": self.artifactd, "mlflow": self.mlflow}.get(system)
        return proc.pid if proc is not None else None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logfile = open(self.s.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives with the server
        return subprocess.Popen(
            argv, stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def start(self) -> None:
        for folder in (self.artifactd_store, self.mlflow_dir, self.cp_store, self.trash.root):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        port_file = self.s.tmp / "artifactd.port"
        port_file.unlink(missing_ok=True)
        self.artifactd = self._spawn(
            "artifactd",
            [
                str(self.s.artifactd_venv / "bin" / "artifactd"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--artifacts-destination",
                str(self.artifactd_store),
                "--backend-store-uri",
                f"sqlite:///{self.artifactd_store}.db",
            ],
            dict(os.environ),
        )
        port = free_port()
        self.mlflow = self._spawn(
            "mlflow",
            [
                str(self.s.mlflow_venv / "bin" / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{self.mlflow_dir}/mlflow.db",
                "--artifacts-destination",
                str(self.mlflow_artifacts),
            ],
            {**os.environ, **MLFLOW_ENV},
        )
        self.artifactd_target = f"127.0.0.1:{wait_port_file(port_file, self.artifactd, self.s)}"
        wait_http(port, self.mlflow, self.s)
        self.mlflow_uri = f"http://127.0.0.1:{port}"
        for proc in (self.artifactd, self.mlflow):
            wait_idle(proc.pid)
        log(
            f"artifactd at {self.artifactd_target} (pid {self.artifactd.pid}), "
            f"MLflow at {self.mlflow_uri} (pid {self.mlflow.pid})"
        )

    def stop(self) -> None:
        for proc in (self.artifactd, self.mlflow):
            if proc is not None and proc.poll() is None:
                stop_tree(proc.pid)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)

    def clean(self, system: str) -> None:
        """Empties a store from outside between commands, so each upload meets an empty store."""
        system = SERVER_OF.get(system, system)
        folder = {
            "cp": self.cp_store,
            "artifactd": self.artifactd_store,
            "mlflow": self.mlflow_artifacts,
        }[system]
        if folder.is_dir():
            for child in folder.iterdir():
                self.trash.discard(child)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_died(name: str, proc: subprocess.Popen[bytes], s: Settings) -> SystemExit:
    tail = (s.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
    return SystemExit(f"{name} exited with {proc.returncode} while starting:\n{tail}")


def wait_port_file(path: Path, proc: subprocess.Popen[bytes], s: Settings) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _server_died("artifactd", proc, s)
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.1)
    raise SystemExit("artifactd did not write its port file within 60 s")


def wait_http(port: int, proc: subprocess.Popen[bytes], s: Settings) -> None:
    """`mlflow server` accepts connections before its workers answer, so ask for /health."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _server_died("mlflow", proc, s)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.5)
    raise SystemExit("mlflow server did not answer /health within 180 s")


def wait_idle(root: int, window: float = 2.0, limit: float = 90.0) -> None:
    """MLflow keeps starting workers and its job runner for a while after /health answers;
    that CPU would otherwise be billed to the first timed command."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        watch = TreeWatch(root)
        watch.start()
        time.sleep(window)
        if watch.stop().cpu_s < 0.05 * window:
            return
    log(f"process tree {root} still busy after {limit:.0f} s; going on")


# -- rounds ----------------------------------------------------------------------------------


class Bench:
    """Runs the rounds and keeps every recorded sample, by label (`<system>_<kind>`)."""

    def __init__(self, s: Settings, servers: Servers) -> None:
        self.s = s
        self.srv = servers
        self.samples: dict[str, list[Sample]] = {}

    def payload(self, kind: str) -> tuple[int, int]:
        """(files, bytes) one operation of `kind` moves."""
        if kind.endswith("_dir"):
            return self.s.count, self.s.count * self.s.file_size
        return 1, self.s.size

    def cp_argv(self, kind: str, out: Path) -> list[str]:
        """cp into a store folder and back out of it, as the servers store and serve a copy."""
        store = self.srv.cp_store
        return {
            "up": ["cp", str(self.s.big), str(store / "big.bin")],
            "down": ["cp", str(store / "big.bin"), str(out)],
            "up_dir": ["cp", "-r", str(self.s.small), str(store / "small")],
            "down_dir": ["cp", "-r", str(store / "small"), str(out)],
        }[kind]

    def cp_fsync_argv(self, kind: str) -> list[str]:
        """cp, then fsync what it wrote before it counts as stored (coreutils' sync FILE;
        -f: syncfs for a tree, as artifactd's group commit)."""
        store = self.srv.cp_store
        if kind == "up":
            script, src, dst = 'cp "$1" "$2" && sync "$2"', self.s.big, store / "big.bin"
        else:
            script, src, dst = 'cp -r "$1" "$2" && sync -f "$2"', self.s.small, store / "small"
        return ["sh", "-c", script, "cp+fsync", str(src), str(dst)]

    def artifactd_cli_argv(self, kind: str, tag: str, out: Path) -> list[str]:
        """The `artifactd` command as users run it: interpreter start-up and imports included."""
        cli = [str(self.s.artifactd_venv / "bin" / "artifactd"), "artifacts"]
        server = ["--server", self.srv.artifactd_target]
        folder = f"bench/{tag}/cli-{'small' if kind.endswith('_dir') else 'large'}"
        source = self.s.small if kind == "up_dir" else self.s.big
        if kind in ("up", "up_dir"):
            return [*cli, "log", str(source), "--artifact-path", folder, *server]
        path = folder + "/big.bin" if kind == "down" else folder
        return [*cli, "download", path, "--dst", str(out), *server]

    def artifactd_argv(self, kind: str, tag: str, out: Path) -> list[str]:
        argv = [
            str(self.s.artifactd_venv / "bin" / "python"),
            str(HERE / "artifactd_ops.py"),
            "--target",
            self.srv.artifactd_target,
        ]
        folder = f"bench/{tag}/{'small' if kind.endswith('_dir') else 'large'}"
        if kind == "up":
            return [*argv, "upload", "--src", str(self.s.big), "--path", folder]
        if kind == "up_dir":
            return [*argv, "upload-dir", "--src", str(self.s.small), "--path", folder]
        files, nbytes = self.payload(kind)
        path = folder + "/big.bin" if kind == "down" else folder
        op = "download" if kind == "down" else "download-dir"
        return [
            *argv,
            op,
            "--path",
            path,
            "--dst",
            str(out),
            "--expect-files",
            str(files),
            "--expect-bytes",
            str(nbytes),
        ]

    def mlflow_argv(self, kind: str, out: Path) -> list[str]:
        state = self.s.tmp / f"mlflow-{'dir' if kind.endswith('_dir') else 'file'}.json"
        argv = [str(self.s.mlflow_venv / "bin" / "python"), str(HERE / "mlflow_ops.py")]
        op = {
            "up": "upload",
            "down": "download",
            "up_dir": "upload-dir",
            "down_dir": "download-dir",
        }[kind]
        argv += [op, "--state", str(state)]
        if kind == "up":
            return [*argv, "--src", str(self.s.big)]
        if kind == "up_dir":
            return [*argv, "--src", str(self.s.small)]
        return [*argv, "--dst", str(out)]

    def command(
        self, system: str, kind: str, tag: str, out: Path
    ) -> tuple[list[str], dict[str, str]]:
        if system == "cp":
            return self.cp_argv(kind, out), dict(os.environ)
        if system == "cp_fsync":
            return self.cp_fsync_argv(kind), dict(os.environ)
        if system == "artifactd":
            return self.artifactd_argv(kind, tag, out), dict(os.environ)
        if system == "artifactd_cli":
            return self.artifactd_cli_argv(kind, tag, out), dict(os.environ)
        env = {**os.environ, **MLFLOW_ENV, "MLFLOW_TRACKING_URI": self.srv.mlflow_uri}
        return self.mlflow_argv(kind, out), env

    def run(self, system: str, kind: str, rnd: int, tag: str) -> None:
        """One timed command: idle first (see README: VM memory balloon), then account the
        server over exactly the command's window."""
        label = f"{system}_{kind}"
        out = Path(tempfile.mkdtemp(prefix=f"out-{label}-", dir=self.s.tmp))
        argv, env = self.command(system, kind, tag, out)
        pid = self.srv.pid(system)
        watch = TreeWatch(pid) if pid is not None else None
        time.sleep(self.s.settle)
        if watch is not None:
            watch.start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=1800, check=False
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        usage = watch.stop() if watch is not None else None
        files, nbytes = self.payload(kind)
        if system == "artifactd_cli" and kind.startswith("down") and done.returncode == 0:
            check_download(str(out), files, nbytes)  # it prints no figure of its own to check
        self.srv.trash.discard(out)
        os.sync()  # the next command must not pay for this one's write-back
        if done.returncode != 0:
            raise SystemExit(
                f"{label} failed ({done.returncode}): {' '.join(argv)}\n"
                f"{done.stdout[-2000:]}{done.stderr[-4000:]}"
            )
        seconds = wall  # cp and the CLI are timed as whole processes
        for line in done.stdout.splitlines():
            match = BENCH_LINE.match(line)
            if match:
                seconds = float(match["seconds"])
                if (int(match["files"]), int(match["bytes"])) != (files, nbytes):
                    raise SystemExit(
                        f"{label} moved {match['files']} files / "
                        f"{match['bytes']} bytes, expected {files} / {nbytes}"
                    )
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self.record(Sample(label, rnd, seconds, wall, nbytes, files, cpu, usage))

    def concurrent(self, rnd: int, tag: str) -> None:
        """N simultaneous 1-file uploads to artifactd, for the server's peak memory."""
        self.uploads_at_once(
            CONCURRENT_LABEL, rnd, self.s.big, self.s.concurrent, f"bench/{tag}/concurrent",
            sample_every=0.05,
        )  # fmt: skip

    def clients_run(self, rnd: int, tag: str) -> None:
        """One client uploading CLIENT_SIZE alone, then `clients` uploading as much each at
        once: does the server use both cores for several clients?"""
        source = self.s.tmp / "inputs" / "client.bin"
        for label, count in ((ONE_CLIENT_LABEL, 1), (CLIENTS_LABEL, self.s.clients)):
            self.uploads_at_once(label, rnd, source, count, f"bench/{tag}/clients{count}")

    def uploads_at_once(
        self, label: str, rnd: int, source: Path, count: int, folder: str,
        sample_every: float = 0.0,
    ) -> None:  # fmt: skip
        """`count` client processes each uploading `source` to artifactd at the same time,
        recorded as one sample (whole wall time, all clients' CPU, the server's usage)."""
        s = self.s
        base = [
            str(s.artifactd_venv / "bin" / "python"), str(HERE / "artifactd_ops.py"),
            "--target", self.srv.artifactd_target, "upload", "--src", str(source),
        ]  # fmt: skip
        argvs = [[*base, "--path", f"{folder}/{i}"] for i in range(count)]
        pid = self.srv.pid("artifactd")
        assert pid is not None
        watch = TreeWatch(pid, sample_every)
        time.sleep(s.settle)
        watch.start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        procs = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for argv in argvs
        ]
        outputs = [proc.communicate(timeout=1800) for proc in procs]
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        usage = watch.stop()
        self.srv.clean("artifactd")
        os.sync()
        for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
            if proc.returncode != 0:
                raise SystemExit(
                    f"{label} upload failed ({proc.returncode}):\n{stdout[-2000:]}{stderr[-4000:]}"
                )
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        nbytes = count * source.stat().st_size
        self.record(Sample(label, rnd, wall, wall, nbytes, count, cpu, usage))

    def record(self, sample: Sample) -> None:
        served = ""
        if sample.server is not None:
            served = (
                f", server {sample.server.cpu_s:.2f} CPU-s, peak RSS "
                f"{sample.server.peak_rss_max / 2**20:.0f} MiB"
            )
            if sample.server.sampled_anon_max:
                served += (
                    f" (sampled every 50 ms: anon {sample.server.sampled_anon_max / 2**20:.0f}"
                    f" MiB, file {sample.server.sampled_file_max / 2**20:.0f} MiB)"
                )
        log(
            f"  {sample.label}: {sample.seconds:.3f} s = "
            f"{sample.bytes / sample.seconds / 1e6:.0f} MB/s, "
            f"{sample.files / sample.seconds:.0f} files/s (whole process {sample.wall_s:.2f} s, "
            f"client {sample.client_cpu_s:.2f} CPU-s{served})"
        )
        if sample.round >= 0:
            self.samples.setdefault(sample.label, []).append(sample)

    def round(self, index: int) -> None:
        """cp, artifactd and MLflow back to back, first system rotating from round to round so
        none always runs first (into the emptiest page cache) or last."""
        rnd = index - self.s.warmup
        tag = f"warmup{index}" if rnd < 0 else f"round{rnd}"
        shift = index % len(SYSTEMS)
        order = SYSTEMS[shift:] + SYSTEMS[:shift]
        log(f"{tag} ({'not recorded' if rnd < 0 else 'recorded'}): {', '.join(order)}")
        for up, down in (("up", "down"), ("up_dir", "down_dir")):
            for system in order:
                self.run(system, up, rnd, tag)
                if system not in UPLOADS_ONLY:
                    self.run(system, down, rnd, tag)
                self.srv.clean(system)
                os.sync()
        if self.s.concurrent > 0:
            self.concurrent(rnd, tag)
        for system in SYSTEMS:
            self.srv.clean(system)
        os.sync()


# -- summary ---------------------------------------------------------------------------------


def stat3(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def throughput(sample: Sample) -> float:
    return sample.bytes / sample.seconds


def summarise(samples: dict[str, list[Sample]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for label, runs in samples.items():
        row: dict[str, object] = {
            "seconds": stat3([r.seconds for r in runs]),
            "MBps": stat3([r.bytes / r.seconds / 1e6 for r in runs]),
            "files_per_s": stat3([r.files / r.seconds for r in runs]),
            "wall_s": stat3([r.wall_s for r in runs]),
            "client_cpu_s": stat3([r.client_cpu_s for r in runs]),
        }
        served = [r.server for r in runs if r.server is not None]
        if served:
            row["server_cpu_s"] = stat3([u.cpu_s for u in served])
            row["server_peak_rss_max_MiB"] = stat3([u.peak_rss_max / 2**20 for u in served])
            row["server_peak_rss_tree_MiB"] = stat3([u.peak_rss_sum / 2**20 for u in served])
            row["server_pss_after_MiB"] = stat3([u.pss_after / 2**20 for u in served])
            row["server_nproc"] = served[0].nproc
            row["server_rss_reset"] = all(u.rss_reset for u in served)
            if any(u.sampled_anon_max for u in served):
                row["server_sampled_anon_max_MiB"] = stat3(
                    [u.sampled_anon_max / 2**20 for u in served]
                )
                row["server_sampled_file_max_MiB"] = stat3(
                    [u.sampled_file_max / 2**20 for u in served]
                )
        out[label] = row
    return out


def round_ratios(samples: dict[str, list[Sample]], num: str, den: str) -> list[float]:
    """num ÷ den throughput within each round: drift of a shared machine moves both alike."""
    by_round = {r.round: r for r in samples.get(den, [])}
    return [
        throughput(r) / throughput(by_round[r.round])
        for r in samples.get(num, [])
        if r.round in by_round
    ]


@dataclass
class Verdict:
    name: str
    goal: str
    measured: str
    passed: bool


def ratios(samples: dict[str, list[Sample]]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for kind in KINDS:
        for num, den in (
            ("artifactd", "mlflow"), ("artifactd_cli", "mlflow"), ("artifactd", "cp"),
            ("artifactd", "cp_fsync"),
        ):  # fmt: skip
            values = round_ratios(samples, f"{num}_{kind}", f"{den}_{kind}")
            if values:
                rows.append(
                    {"kind": kind, "num": num, "den": den, "per_round": values, **stat3(values)}
                )
    values = round_ratios(samples, CLIENTS_LABEL, ONE_CLIENT_LABEL)
    if values:
        rows.append(
            {"kind": "clients", "num": "artifactd", "den": "one client", "per_round": values,
             **stat3(values)}
        )  # fmt: skip
    return rows


def _ratio_verdict(
    rows: list[dict[str, object]], kind: str, num: str, den: str, goal: float, name: str
) -> Verdict | None:
    row = next((r for r in rows if r["kind"] == kind and r["num"] == num and r["den"] == den), None)
    if row is None:
        return None
    median = float(row["median"])  # type: ignore[arg-type]
    return Verdict(name, f">= {goal:g}x", f"{median:.2f}x (median of {row['n']})", median >= goal)


def cpu_per_gib(samples: dict[str, list[Sample]], label: str) -> list[float]:
    """Client + server CPU seconds per GiB moved, per round."""
    return [
        (r.client_cpu_s + r.server.cpu_s) / (r.bytes / 2**30)
        for r in samples.get(label, [])
        if r.server is not None
    ]


def verdicts(
    s: Settings,
    ratio_rows: list[dict[str, object]],
    samples: dict[str, list[Sample]],
    names: dict[str, str],
) -> list[Verdict]:
    candidates: list[Verdict | None] = []
    loaded = f" with {s.hog} busy processes" if s.hog else ""
    for kind, goal in LOADED_TARGETS if s.hog else TARGETS:
        for num in ("artifactd", "artifactd_cli"):
            candidates.append(
                _ratio_verdict(
                    ratio_rows,
                    kind,
                    num,
                    "mlflow",
                    goal,
                    f"{names[kind]}{loaded}: {NAMES[num]} ÷ MLflow",
                )
            )
    candidates.append(
        _ratio_verdict(
            ratio_rows,
            "up",
            "artifactd",
            "cp_fsync",
            CP_FSYNC_TARGET,
            f"{names['up']}: artifactd ÷ cp + fsync",
        )
    )
    for kind, goal in CPU_TARGETS.items():
        values = cpu_per_gib(samples, f"artifactd_{kind}")
        if values:
            median = statistics.median(values)
            candidates.append(
                Verdict(
                    f"{names[kind]}: CPU-s per GiB, client + server",
                    f"<= {goal:g}",
                    f"{median:.2f} (median of {len(values)})",
                    median <= goal,
                )
            )
    candidates.append(
        _ratio_verdict(
            ratio_rows,
            "clients",
            "artifactd",
            "one client",
            CLIENTS_TARGET,
            f"{s.clients} clients {TIMES} {human_size(CLIENT_SIZE)} upload: aggregate ÷ one client",
        )
    )
    out = [v for v in candidates if v is not None]
    runs = [r.server for r in samples.get(CONCURRENT_LABEL, []) if r.server is not None]
    if runs:
        peaks = [u.peak_rss_max for u in runs]
        worst = max(peaks)
        out.append(
            Verdict(
                f"artifactd server peak RSS, {s.concurrent} concurrent "
                f"{human_size(s.size)} uploads",
                f"<= {RSS_TARGET_BYTES / 1e6:.0f} MB",
                f"{worst / 1e6:.0f} MB worst of {len(peaks)} (median "
                f"{statistics.median(peaks) / 1e6:.0f} MB)",
                worst <= RSS_TARGET_BYTES,
            )
        )
    return out


# -- report ----------------------------------------------------------------------------------


def fmt(stat: object, digits: int = 0) -> str:
    """'median (min-max)', or just the value for a single round."""
    if not isinstance(stat, dict):
        return DASH
    if stat["n"] == 1:
        return f"{stat['median']:.{digits}f}"
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}{DASH}{stat['max']:.{digits}f})"


def operation_names(s: Settings) -> dict[str, str]:
    big, small = human_size(s.size), f"{s.count} {TIMES} {human_size(s.file_size)}"
    return {
        "up": f"upload {big}",
        "down": f"download {big}",
        "up_dir": f"upload dir {small}",
        "down_dir": f"download dir {small}",
        "concurrent": f"{s.concurrent} {TIMES} upload {big} at once",
        "one_client": f"1 client: upload {human_size(CLIENT_SIZE)}",
        "clients": f"{s.clients} clients {TIMES} upload {human_size(CLIENT_SIZE)} at once",
    }


def render(s: Settings, result: dict[str, object]) -> str:
    names = operation_names(s)
    summary: dict[str, dict[str, object]] = result["summary"]  # type: ignore[assignment]
    info: dict[str, str] = result["versions"]  # type: ignore[assignment]
    deletes = (
        "scratch files deleted at the end of the run"
        if s.defer_deletes
        else "scratch files deleted between commands"
    )
    lines = [
        f"### artifactd vs MLflow {info['mlflow']} vs cp — {result['date']}",
        "",
        f"`{s.command_line()}`",
        "",
        f"{info['cpus']} CPUs, Linux {info['kernel']}, Python {info['python']}; artifactd "
        f"{info['artifactd_git']} (fsync {info['artifactd_fsync']}), `mlflow server` "
        f"(proxied artifacts, local destination), {info['cp']}. N = {s.runs} recorded rounds "
        f"after {s.warmup} warm-up; order of systems rotated each round; {s.settle:g} s idle "
        f"before every timed command; {deletes}; load average {result['loadavg_before']} → "
        f"{result['loadavg_after']}, CPU steal {result['steal_pct']:.1f} %"
        f"{f'; {s.hog} busy CPU-bound processes ran beside the benchmark (HOG)' if s.hog else ''}"
        f". Figures are median (min{DASH}max); seconds are the client's own timing of the "
        "operation (start-up excluded; cp, cp + fsync and the artifactd CLI: the whole process, "
        "start-up included); MB = 10^6 bytes.",
        "",
        "| operation | system | seconds | MB/s | files/s | client CPU s (whole process) "
        "| server CPU s | server peak RSS MiB: largest process / tree (procs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    special = {
        "concurrent": CONCURRENT_LABEL, "one_client": ONE_CLIENT_LABEL, "clients": CLIENTS_LABEL,
    }  # fmt: skip
    for kind in (*KINDS, *special):
        for system in SYSTEMS:
            label = special.get(kind, f"{system}_{kind}")
            if kind in special and system != "artifactd":
                continue
            row = summary.get(label)
            if row is None:
                continue
            rss = DASH
            if "server_peak_rss_max_MiB" in row:
                rss = (
                    f"{fmt(row['server_peak_rss_max_MiB'])} / "
                    f"{fmt(row['server_peak_rss_tree_MiB'])} ({row['server_nproc']})"
                )
            per_file = fmt(row["files_per_s"]) if kind.endswith("_dir") else ""
            lines.append(
                f"| {names[kind]} | {NAMES[system]} | {fmt(row['seconds'], 2)} | "
                f"{fmt(row['MBps'])} | {per_file} | {fmt(row['client_cpu_s'], 2)} | "
                f"{fmt(row.get('server_cpu_s'), 2)} | {rss} |"
            )
    lines += [
        "",
        f"| ratio of throughputs, taken round by round | median | min{DASH}max | per round |",
        "|---|---|---|---|",
    ]
    for r in result["ratios"]:  # type: ignore[attr-defined]
        per_round = ", ".join(f"{v:.2f}" for v in r["per_round"])
        lines.append(
            f"| {names[r['kind']]}: {NAMES.get(r['num'], r['num'])} ÷ "
            f"{NAMES.get(r['den'], r['den'])} | "
            f"**{r['median']:.2f}** | {r['min']:.2f}{DASH}{r['max']:.2f} | {per_round} |"
        )
    lines += ["", "| target | goal | measured | result |", "|---|---|---|---|"]
    for v in result["verdicts"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {v['name']} | {v['goal']} | {v['measured']} | "
            f"**{'PASS' if v['passed'] else 'MISS'}** |"
        )
    return "\n".join(lines)


def cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        values = [int(x) for x in fh.readline().split()[1:]]
    return sum(values), values[7] if len(values) > 7 else 0


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[0]


def cleanup(s: Settings, servers: Servers) -> None:
    """Gigabytes of scratch data should not outlive the run; logs are kept for post-mortems."""
    servers.trash.empty()
    for folder in (servers.artifactd_store, servers.mlflow_dir, servers.cp_store):
        shutil.rmtree(folder, ignore_errors=True)
    for leftover in s.tmp.glob("out-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for state in (*s.tmp.glob("mlflow-*.json"), s.tmp / "artifactd.port"):
        state.unlink(missing_ok=True)
    if not s.keep_inputs:
        shutil.rmtree(s.big.parent, ignore_errors=True)


@contextlib.contextmanager
def hogs(count: int) -> Iterator[None]:
    """`count` CPU-bound processes beside the benchmark (HOG=2: a loaded 2-core machine)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running(servers: Servers, s: Settings) -> Iterator[Servers]:
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
        cleanup(s, servers)


def main() -> int:
    s = Settings.from_env()
    s.tmp.mkdir(parents=True, exist_ok=True)
    ensure_mlflow(s)
    byte_compile_artifactd(s)
    servers = Servers(s)
    load0, (total0, steal0) = loadavg(), cpu_ticks()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with running(servers, s), hogs(s.hog):
        make_inputs(s)
        info = versions(s)
        bench = Bench(s, servers)
        for index in range(s.warmup + s.runs):
            bench.round(index)
        # After every round: 8 clients leave glibc arenas behind in the server, which the peak
        # RSS of the next round's concurrent uploads would otherwise count.
        for rnd in range(s.runs if s.clients > 0 else 0):
            bench.clients_run(rnd, f"clients{rnd}")
    total1, steal1 = cpu_ticks()
    ratio_rows = ratios(bench.samples)
    verdict_rows = verdicts(s, ratio_rows, bench.samples, operation_names(s))
    result: dict[str, object] = {
        "date": date,
        "command": s.command_line(),
        "settings": asdict(s),
        "versions": info,
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
        "steal_pct": 100.0 * (steal1 - steal0) / max(1, total1 - total0),
        "samples": {k: [asdict(x) for x in v] for k, v in bench.samples.items()},
        "summary": summarise(bench.samples),
        "ratios": ratio_rows,
        "verdicts": [asdict(v) for v in verdict_rows],
    }
    markdown = render(s, result)
    result["markdown"] = markdown
    s.results.mkdir(parents=True, exist_ok=True)
    path = s.results / f"bench-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(markdown)
    print()
    for v in verdict_rows:
        print(f"{'PASS' if v.passed else 'MISS'}: {v.name} = {v.measured} (goal {v.goal})")
    print(f"\n(raw results: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
