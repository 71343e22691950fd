"""Direct (presigned multipart) upload vs streaming through the server, on S3 (moto's server).

    .venv/bin/python bench/direct_bench.py                  # 3 rounds of 1 GiB
    RUNS=1 SIZE=128MiB .venv/bin/python bench/direct_bench.py

Runs in artifactd's own environment (it needs the client, boto3 and moto[server] from the dev
extra). Each round uploads the same file both ways, in alternating order, and reports the wall
time and the CPU seconds of the artifactd server process and of the storage server (moto) during
the upload. The point of direct uploads is the server's share: with them the bytes never pass
through it, so its CPU should be close to nothing whatever the file size. moto is a slow Python
S3 server on the same two cores, so wall times here say little about real S3.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import parse_size
from proctree import cpu_seconds, stop_tree

REPO = Path(__file__).resolve().parent.parent
BUCKET = "artifactd-bench"
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start in {limit:.0f}s")


def main() -> None:
    import boto3

    from artifactd.client import ArtifactClient
    from artifactd.client.direct import DirectSettings

    runs = int(os.environ.get("RUNS", "3"))
    size = parse_size(os.environ.get("SIZE", "1GiB"))
    work = Path(tempfile.mkdtemp(prefix="direct-bench-", dir=os.environ.get("BENCH_TMP")))
    moto_port, env = free_port(), dict(os.environ)
    endpoint = f"http://127.0.0.1:{moto_port}"
    storage_env = {
        "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    server = None
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", moto_port), 1).close() or True,
                 "moto")  # fmt: skip
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # noqa: S106  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        port_file = work / "port"
        server = subprocess.Popen(
            [sys.executable, "-m", "artifactd.cli.main", "serve", "--port", "0",
             "--port-file", str(port_file), "--artifacts-destination", f"s3://{BUCKET}/root",
             "--backend-store-uri", f"sqlite:///{work}/store.db", "--log-level", "WARNING"],
            env={**env, **storage_env}, cwd=work, start_new_session=True,
        )  # fmt: skip
        wait_for(port_file.exists, "artifactd")
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        source = work / "model.bin"
        with open(source, "wb") as fh:
            for _ in range(size // MiB):
                fh.write(os.urandom(MiB))
            fh.write(os.urandom(size % MiB))
        results: dict[str, list[tuple[float, float, float]]] = {"direct": [], "streamed": []}
        for round_number in range(runs):
            order = ("direct", "streamed") if round_number % 2 == 0 else ("streamed", "direct")
            for mode in order:
                settings = DirectSettings(
                    enabled=mode == "direct", minimum_size=1, part_size=64 * MiB, workers=4,
                    state_dir=str(work / "state"),
                )  # fmt: skip
                server_cpu, moto_cpu = cpu_seconds(server.pid), cpu_seconds(moto.pid)
                started = time.perf_counter()
                with ArtifactClient(target, direct=settings) as client:
                    info = client.log_artifact(source, f"{mode}-{round_number}")
                wall = time.perf_counter() - started
                assert info.file_size == size
                results[mode].append(
                    (wall, cpu_seconds(server.pid) - server_cpu, cpu_seconds(moto.pid) - moto_cpu)
                )
                print(f"round {round_number + 1} {mode:8s} {wall:6.2f} s  server CPU "
                      f"{results[mode][-1][1]:5.2f} s  storage CPU {results[mode][-1][2]:5.2f} s",
                      flush=True)  # fmt: skip
        print(f"\n{size / MiB:.0f} MiB upload to S3 (moto), median of {runs} rounds")
        print("| mode | wall s | MiB/s | artifactd server CPU s | storage (moto) CPU s |")
        print("|---|---|---|---|---|")
        medians = {}
        for mode, rows in results.items():
            wall, server_s, storage_s = (statistics.median(c) for c in zip(*rows, strict=True))
            medians[mode] = (wall, server_s)
            print(f"| {mode} | {wall:.2f} | {size / MiB / wall:.0f} | {server_s:.2f} | "
                  f"{storage_s:.2f} |")  # fmt: skip
        direct, streamed = medians["direct"], medians["streamed"]
        print(f"\nserver CPU, direct / streamed: {direct[1] / max(streamed[1], 1e-9):.3f}; "
              f"wall time, direct / streamed: {direct[0] / streamed[0]:.2f}")  # fmt: skip
    finally:
        if server is not None:
            stop_tree(server.pid)
        stop_tree(moto.pid)


if __name__ == "__main__":
    main()
