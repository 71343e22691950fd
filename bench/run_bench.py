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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchutil import BENCH_LINE, parse_size
from proctree import TreeUsage, TreeWatch, stop_tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SYSTEMS = ("cp", "artifactd", "mlflow")
NAMES = {"cp": "cp", "artifactd": "artifactd", "mlflow": "MLflow"}
KINDS = ("up", "down", "up_dir", "down_dir")
CONCURRENT_LABEL = "artifactd_up_concurrent"
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
"""The MLflow client and server would otherwise report usage over the network in the middle of
timed operations."""

TARGETS = (("up", 1.5), ("down", 1.2), ("up_dir", 5.0), ("down_dir", 15.0))
"""artifactd ÷ MLflow throughput, median of the per-round ratios."""
RSS_TARGET_BYTES = 300 * 10**6


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
            env_text=text,
        )

    def command_line(self) -> str:
        """The exact invocation, so a pasted table says how to reproduce it."""
        extra = {
            key: os.environ[key]
            for key in ("WARMUP", "CONCURRENT", "ARTIFACTD_FSYNC")
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
    """Creates MLflow's venv on first use, kept apart so its dependencies cannot touch artifactd's."""
    if (s.mlflow_venv / "bin" / "mlflow").exists():
        return
    log(f"creating {s.mlflow_venv} with {s.mlflow_pip_spec} (one-off, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(s.mlflow_venv)], check=True)
    pip = str(s.mlflow_venv / "bin" / "pip")
    subprocess.run([pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "-q", *s.mlflow_pip_spec.split()], check=True)


def make_inputs(s: Settings) -> None:
    """Random, so nothing on the path can win by compressing; reused only if already right."""
    s.big.parent.mkdir(parents=True, exist_ok=True)
    if not (s.big.exists() and s.big.stat().st_size == s.size):
        log(f"writing {s.big} ({human_size(s.size)} from os.urandom)")
        with open(s.big, "wb") as fh:
            left = s.size
            while left:
                block = os.urandom(min(left, 16 << 20))
                fh.write(block)
                left -= len(block)
    names = [f"f{i:05d}.bin" for i in range(s.count)]
    sizes_ok = s.small.is_dir() and sorted(os.listdir(s.small)) == names and all(
        (s.small / n).stat().st_size == s.file_size for n in names
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
        "artifactd_fsync": os.environ.get("ARTIFACTD_FSYNC", "default (on)"),
        "mlflow": out([str(s.mlflow_venv / "bin" / "python"), "-c",
                       "import mlflow; print(mlflow.__version__)"]),
        "cp": out(["cp", "--version"]),
    }


# -- servers ---------------------------------------------------------------------------------


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

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    def pid(self, system: str) -> int | None:
        proc = {"artifactd": self.artifactd, "mlflow": self.mlflow}.get(system)
        return proc.pid if proc is not None else None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logfile = open(self.s.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives with the server
        return subprocess.Popen(
            argv, stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def start(self) -> None:
        for folder in (self.artifactd_store, self.mlflow_dir, self.cp_store):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        port_file = self.s.tmp / "artifactd.port"
        port_file.unlink(missing_ok=True)
        self.artifactd = self._spawn("artifactd", [
            str(self.s.artifactd_venv / "bin" / "artifactd"), "serve", "--host", "127.0.0.1",
            "--port", "0", "--port-file", str(port_file),
            "--artifacts-destination", str(self.artifactd_store),
        ], dict(os.environ))
        port = free_port()
        self.mlflow = self._spawn("mlflow", [
            str(self.s.mlflow_venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1",
            "--port", str(port), "--backend-store-uri", f"sqlite:///{self.mlflow_dir}/mlflow.db",
            "--artifacts-destination", str(self.mlflow_artifacts),
        ], {**os.environ, **MLFLOW_ENV})
        self.artifactd_target = f"127.0.0.1:{wait_port_file(port_file, self.artifactd, self.s)}"
        wait_http(port, self.mlflow, self.s)
        self.mlflow_uri = f"http://127.0.0.1:{port}"
        log(f"artifactd at {self.artifactd_target} (pid {self.artifactd.pid}), "
            f"MLflow at {self.mlflow_uri} (pid {self.mlflow.pid})")

    def stop(self) -> None:
        for proc in (self.artifactd, self.mlflow):
            if proc is not None and proc.poll() is None:
                stop_tree(proc.pid)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)

    def clean(self, system: str) -> None:
        """Empties a store from outside between commands, so each upload meets an empty store."""
        folder = {"cp": self.cp_store, "artifactd": self.artifactd_store,
                  "mlflow": self.mlflow_artifacts}[system]
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def free_port() -> int:
    import socket

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


