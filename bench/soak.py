"""Soak: K concurrent clients of mixed operations for T minutes, every digest verified, the
server's memory and descriptors sampled; fails on any loss, any INTERNAL, or growth.

Why: single-fault tests prove a path once; a storage service is trusted for what it does after
hours of mixed load, where leaks (memory, descriptors, upload sessions) and rare races show.
Each client (a thread, bench/soak_client.py) logs files and directories, downloads, lists,
stats, deletes and completes resumable uploads (presigned multipart too, where the server's
storage supports it) under its own prefix, checking everything against its model of what must
be there; at the end every client checks its whole prefix once more.

    .venv/bin/python bench/soak.py                      # 32 clients, 30 minutes, own server
    .venv/bin/python bench/soak.py --clients 8 --seconds 60
    .venv/bin/python bench/soak.py --target host:port --server-pid PID

It exits non-zero when a file was lost or corrupt (or listed but never stored), a call failed
with INTERNAL, UNKNOWN or DATA_LOSS, the client raised something that is not a status, the
server's RSS after warm-up grew (median of the last quarter of samples over the first) beyond
--rss-growth or exceeded --rss-cap-mb, its open descriptors grew by more than --fd-slack or
exceeded --fd-cap, its own server did not stop cleanly, or temporary upload files were left.
Results go to bench/results/soak-<UTC time>.json and a .md beside it (or --json PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

# servers.py: the server is started the way the tests start it
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from soak_client import FATAL_CODES, SoakClient, scratch_for

from servers import start_server

RESULTS = Path(__file__).resolve().parent / "results"
TEMP_PREFIX = ".artifactd-upload-"


@dataclass
class Sample:
    t: float
    rss_kib: int
    fds: int


@dataclass
class Sampler:
    """RSS and open descriptors of one process, every `interval` seconds, from /proc."""

    pid: int
    interval: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def take(self, started: float) -> None:
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except (OSError, StopIteration):
            return  # the process is gone: the run reports that elsewhere
        self.samples.append(Sample(round(time.monotonic() - started, 2), rss, fds))

    def run(self, started: float) -> None:
        while not self._stop.wait(self.interval):
            self.take(started)

    def stop(self) -> None:
        self._stop.set()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def resource_summary(samples: list[Sample], key: str) -> dict[str, float]:
    values = [getattr(s, key) for s in samples]
    if not values:
        return {}
    return {"min": min(values), "max": max(values), "first": values[0], "last": values[-1]}


def steady_medians(samples: list[Sample], warmup: float) -> dict[str, float]:
    """Medians of the first and the last quarter of the samples after warm-up, which a server
    in steady state keeps level; empty when there are too few samples to tell."""
    steady = [s for s in samples if s.t >= warmup]
    if len(steady) < 8:
        return {}
    quarter = len(steady) // 4
    first, last = steady[:quarter], steady[-quarter:]
    return {
        "rss_kib_first_quarter": statistics.median(s.rss_kib for s in first),
        "rss_kib_last_quarter": statistics.median(s.rss_kib for s in last),
        "fds_first_quarter": statistics.median(s.fds for s in first),
        "fds_last_quarter": statistics.median(s.fds for s in last),
    }


def growth_verdicts(
    samples: list[Sample], steady: dict[str, float], args: argparse.Namespace
) -> list[str]:
    """Memory and descriptor bounds: caps over the whole run, growth after warm-up."""
    failures = []
    if samples and max(s.rss_kib for s in samples) > args.rss_cap_mb * 1000 * 1000 / 1024:
        failures.append(f"server RSS exceeded {args.rss_cap_mb} MB")
    if samples and max(s.fds for s in samples) > args.fd_cap:
        failures.append(f"server open descriptors exceeded {args.fd_cap}")
    if not steady:
        return failures
    rss_first, rss_last = steady["rss_kib_first_quarter"], steady["rss_kib_last_quarter"]
    if rss_last > args.rss_growth * rss_first:
        failures.append(
            f"server RSS grew from {rss_first / 1024:.0f} MiB to {rss_last / 1024:.0f} MiB "
            f"(median of the first and last quarter after warm-up; bound {args.rss_growth}x)"
        )
    fd_first, fd_last = steady["fds_first_quarter"], steady["fds_last_quarter"]
    if fd_last > fd_first + args.fd_slack:
        failures.append(
            f"server open descriptors grew from {fd_first:.0f} to {fd_last:.0f} "
            f"(bound +{args.fd_slack})"
        )
    return failures


def leftover_temp_files(root: Path) -> list[str]:
    """Temporary files of uploads in progress (`<prefix><owner>-<token>`) under `root`: none
    may outlive a server stopped cleanly. (A resumable upload's kept bytes, named without an
    owner, outlive it on purpose.)"""
    return [
        os.path.join(d, n)
        for d, _dirs, names in os.walk(root)
        for n in names
        if n.startswith(TEMP_PREFIX) and "-" in n[len(TEMP_PREFIX) :]
    ]


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"# Soak {result['stamp']}",
        "",
        f"`{result['command']}`: {s['clients']} clients for {s['seconds']:.0f} s against "
        f"{result['server']} ({result['backend']}); {result['verdict']}.",
        "",
        "| operation | count | errors | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, row in sorted(result["operations"].items()):
        lines.append(
            f"| {kind} | {row['count']} | {row['errors']} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} |"
        )
    lines += ["", "Errors by status code: " + (json.dumps(result["errors_by_code"]) or "{}")]
    for key, label, scale, unit in (("rss_kib", "RSS", 1 / 1024, "MiB"), ("fds", "fds", 1, "")):
        summary = result["server_resources"].get(key)
        if summary:
            figures = ", ".join(f"{k} {v * scale:.0f}{unit}" for k, v in summary.items())
            lines.append(f"Server {label}: {figures} ({len(result['samples'])} samples).")
    steady = result.get("steady_state")
    if steady:
        lines.append(
            "After warm-up, median of the first / last quarter of samples: RSS "
            f"{steady['rss_kib_first_quarter'] / 1024:.0f} / "
            f"{steady['rss_kib_last_quarter'] / 1024:.0f} MiB, fds "
            f"{steady['fds_first_quarter']:.0f} / {steady['fds_last_quarter']:.0f}."
        )
    lines += ["", "Failures: " + ("; ".join(result["failures"]) or "none"), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, help="duration in seconds (over --minutes)")
    parser.add_argument("--target", help="a running server host:port (default: start one)")
    parser.add_argument("--server-pid", type=int, help="with --target: the PID to sample")
    parser.add_argument("--json", type=Path, help="result path (default bench/results/...)")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--sample-interval", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, help="seconds (default 10%% of the run, >=10)")
    parser.add_argument("--rss-growth", type=float, default=1.5)
    parser.add_argument("--rss-cap-mb", type=float, default=1024.0)
    parser.add_argument("--fd-slack", type=int, default=32)
    parser.add_argument("--fd-cap", type=int, default=1024)
    args = parser.parse_args(argv)
    args.duration = args.seconds if args.seconds is not None else args.minutes * 60
    if args.warmup is None:
        args.warmup = max(10.0, args.duration / 10)
    return args


def soak(args: argparse.Namespace, target: str, pid: int | None, workdir: Path) -> dict[str, Any]:
    """Runs the clients and the sampler; returns the result without the server's verdicts."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ArtifactServiceStub(channel)
        capabilities = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=30)
    multipart = capabilities.supports_multipart_upload and capabilities.supports_presigned_urls
    run_tag = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    clients = [
        SoakClient(
            target,
            f"soak-{run_tag}/c{i:03d}",
            scratch_for(workdir / "clients", i),
            args.seed * 1000 + i,
            multipart=multipart,
        )
        for i in range(args.clients)
    ]
    started = time.monotonic()
    sampler = Sampler(pid, args.sample_interval) if pid else None
    if sampler:
        sampler.take(started)
        threading.Thread(target=sampler.run, args=(started,), daemon=True).start()
    until = started + args.duration
    threads = [threading.Thread(target=c.run, args=(until,), name=f"c{i}") for i, c in
               enumerate(clients)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for client in clients:
        client.verify_all()
        client.close()
    if sampler:
        sampler.stop()
        sampler.take(started)
    ops: Counter[str] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    latencies: dict[str, list[float]] = {}
    violations: list[str] = []
    for client in clients:
        ops.update(client.tally.ops)
        errors.update(client.tally.errors)
        for kind, values in client.tally.latencies.items():
            latencies.setdefault(kind, []).extend(values)
        violations += [f"{client.prefix}: {v}" for v in client.tally.violations]
    by_code: Counter[str] = Counter()
    for (_kind, code), count in errors.items():
        by_code[code] += count
    operations = {
        kind: {
            "count": ops[kind],
            "errors": sum(n for (k, _c), n in errors.items() if k == kind),
            "p50_ms": 1000 * percentile(latencies.get(kind) or [0.0], 0.50),
            "p99_ms": 1000 * percentile(latencies.get(kind) or [0.0], 0.99),
        }
        for kind in sorted(set(ops) | {k for k, _c in errors})
    }
    failures = [f"lost or corrupt: {v}" for v in violations[:20]]
    fatal = {code: n for code, n in by_code.items() if code in FATAL_CODES or ":" in code}
    if fatal:
        failures.append(f"fatal errors: {fatal}")
    samples = sampler.samples if sampler else []
    steady = steady_medians(samples, args.warmup)
    failures += growth_verdicts(samples, steady, args)
    return {
        "settings": {
            "clients": args.clients,
            "seconds": args.duration,
            "seed": args.seed,
            "sample_interval": args.sample_interval,
            "warmup": args.warmup,
            "rss_growth": args.rss_growth,
            "rss_cap_mb": args.rss_cap_mb,
            "fd_slack": args.fd_slack,
            "fd_cap": args.fd_cap,
            "multipart": multipart,
        },
        "backend": capabilities.backend,
        "elapsed": round(elapsed, 1),
        "operations_total": sum(ops.values()),
        "operations": operations,
        "errors_by_code": dict(by_code),
        "errors_by_kind_and_code": {f"{k}:{c}": n for (k, c), n in sorted(errors.items())},
        "violations": violations,
        "server_resources": {
            "rss_kib": resource_summary(samples, "rss_kib"),
            "fds": resource_summary(samples, "fds"),
        },
        "steady_state": steady,
        "samples": [[s.t, s.rss_kib, s.fds] for s in samples],
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="artifactd-soak-") as tmp:
        workdir = Path(tmp)
        if args.target:
            result = soak(args, args.target, args.server_pid, workdir)
            result["server"] = args.target
        else:
            root = workdir / "store"
            server = start_server(root, workdir / "run", timeout=60)
            try:
                result = soak(args, server.target, server.process.pid, workdir)
            finally:
                code = server.stop(timeout=60)
            result["server"] = "own artifactd serve (local root, fsync on)"
            if code != 0:
                result["failures"].append(f"the server exited with {code} on SIGTERM")
            left = leftover_temp_files(root)
            if left:
                result["failures"].append(f"temporary upload files left: {left[:5]}")
            result["server_log_tail"] = server.log_text()[-2000:]
    result["stamp"] = stamp
    result["command"] = "bench/soak.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["verdict"] = "FAIL" if result["failures"] else "PASS"
    out = args.json or RESULTS / f"soak-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"results: {out} and {out.with_suffix('.md')}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
