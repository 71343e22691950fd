"""Transfer throughput of this checkout's server against an earlier revision's, in one run.

    python bench/version_bench.py --against 40ae1b4 [--size-mib 512] [--rounds 3]
    python bench/version_bench.py --against 40ae1b4 --files 1000 [--file-kib 16]

Both servers run from source (the earlier one from a `git worktree`) with the same venv, on
127.0.0.1, default flags (authentication off, no metrics port: the per-call interceptors still
run); the same client (this checkout's) uploads a file and downloads it again, alternating
between the two servers round by round so machine noise hits both alike. Prints medians and the
ratio new/old (above 1: the new server is faster), and the server's CPU seconds per GiB moved,
which this shared machine's noise moves less than wall time. Files of 64 MiB and more go up
resumably by default, as they do for users; `--plain-stream` sends them as one plain stream.
`--files N` moves a directory of N small files instead (one LogArtifacts stream up, one
DownloadArtifacts stream down), reported in files/s and server CPU-ms per file. `--settle S`
idles S seconds before each timed transfer, as `run_bench.py` does (on this VM, memory idle for
about 2 s goes back to the host, which changes what writing a new file costs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TOP / "client"), str(TOP / "tests"), str(TOP / "bench")]

from proctree import cpu_seconds  # noqa: E402

from artifactd.client import ArtifactClient  # noqa: E402
from artifactd.client.settings import ClientSettings  # noqa: E402

Sample = tuple[float, float, float, float]
"""Upload seconds, download seconds, server CPU seconds of each."""


def start(tree: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    work.mkdir(parents=True)
    port_file = work / "port"
    env = {**os.environ, "PYTHONPATH": f"{tree / 'server'}{os.pathsep}{tree / 'client'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "artifactd.cli.main", "serve", "--port", "0", "--port-file",
         str(port_file), "--artifacts-destination", str(work / "store"), "--log-level", "WARNING"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server from {tree} did not start")
        time.sleep(0.05)
    return process, f"127.0.0.1:{port_file.read_text().strip()}"


def one_round(
    server: int, target: str, source: Path, out: Path, name: str, settle: float
) -> Sample:
    settings = ClientSettings(max_retries=0, rpc_timeout=600)
    with ArtifactClient(target, settings=settings) as client:
        time.sleep(settle)
        began, cpu = time.perf_counter(), cpu_seconds(server)
        if source.is_dir():
            client.log_artifacts(source, name)
        else:
            client.log_artifact(source, name)
        uploaded, upload_cpu = time.perf_counter() - began, cpu_seconds(server) - cpu
        time.sleep(settle)
        began, cpu = time.perf_counter(), cpu_seconds(server)
        client.download_artifacts(name if source.is_dir() else f"{name}/{source.name}", out)
        downloaded, download_cpu = time.perf_counter() - began, cpu_seconds(server) - cpu
    return uploaded, downloaded, upload_cpu, download_cpu


def write_payload(base: Path, files: int, file_kib: int, size_mib: int) -> Path:
    """A directory of `files` random files of `file_kib` KiB, or one file of `size_mib` MiB."""
    if files:
        directory = base / "payload"
        directory.mkdir()
        for index in range(files):
            (directory / f"f{index:05d}.bin").write_bytes(os.urandom(file_kib * 1024))
        return directory
    source = base / "payload.bin"
    with open(source, "wb") as fh:
        for _ in range(size_mib):
            fh.write(os.urandom(1 << 20))
    return source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-stream", action="store_true", help="no resumable uploads")
    parser.add_argument("--files", type=int, default=0, help="a directory of this many files")
    parser.add_argument("--file-kib", type=int, default=16, help="size of each of --files")
    parser.add_argument(
        "--settle", type=float, default=0.0,
        help="seconds idle before each timed transfer (run_bench.py's BENCH_SETTLE)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "false"  # measure the streamed path
    if args.plain_stream:
        os.environ["ARTIFACTD_RESUMABLE_MINIMUM_FILE_SIZE"] = str(1 << 40)
    with tempfile.TemporaryDirectory(prefix="version-bench-") as scratch:
        base = Path(scratch)
        old_tree = base / "old"
        subprocess.run(["git", "-C", str(TOP), "worktree", "add", "--detach", str(old_tree),
                        args.against], check=True, capture_output=True)  # fmt: skip
        processes = []
        try:
            source = write_payload(base, args.files, args.file_kib, args.size_mib)
            servers = {}
            for label, tree in (("new", TOP), ("old", old_tree)):
                process, target = start(tree, base / f"run-{label}")
                processes.append(process)
                servers[label] = (process.pid, target)
            samples: dict[str, list[Sample]] = {"new": [], "old": []}
            mib = args.size_mib

            def units(seconds: float) -> str:
                if args.files:
                    return f"{args.files / seconds:7.0f} files/s"
                return f"{mib / seconds:7.1f} MiB/s"

            def cpu_per(cpu: float) -> str:
                if args.files:
                    return f"{cpu * 1000 / args.files:.3f} server CPU-ms/file"
                return f"{cpu / (mib / 1024):.2f} server CPU-s/GiB"

            for index in range(args.rounds):
                order = ("new", "old") if index % 2 == 0 else ("old", "new")
                for label in order:
                    out = base / f"out-{label}-{index}"
                    sample = one_round(*servers[label], source, out, f"r{index}", args.settle)
                    samples[label].append(sample)
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                    print(f"round {index} {label}: upload {units(sample[0])}"
                          f" ({sample[2]:.2f} server CPU-s), download {units(sample[1])}"
                          f" ({sample[3]:.2f})", file=sys.stderr, flush=True)  # fmt: skip
            medians = {
                label: [statistics.median(column) for column in zip(*runs, strict=True)]
                for label, runs in samples.items()
            }
            for label, (up, down, up_cpu, down_cpu) in medians.items():
                print(f"{label}: upload {units(up)} ({cpu_per(up_cpu)})"
                      f"  download {units(down)} ({cpu_per(down_cpu)})")  # fmt: skip
            new, old = medians["new"], medians["old"]
            what = f"{args.files} files of {args.file_kib} KiB" if args.files else f"{mib} MiB"
            print(
                f"new/old: upload {old[0] / new[0]:.2f}x  download {old[1] / new[1]:.2f}x; "
                f"server CPU new/old: upload {new[2] / old[2]:.2f}, download "
                f"{new[3] / old[3]:.2f} ({args.rounds} rounds of {what}, medians)"
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait(60)
            subprocess.run(["git", "-C", str(TOP), "worktree", "remove", "--force",
                            str(old_tree)], check=False, capture_output=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
