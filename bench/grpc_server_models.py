"""Does grpc.aio's server move bytes faster or cheaper than the thread-pool server, here?

Issue 21 asks to adopt the asyncio gRPC server only if it measurably beats the thread pool on this
machine. This answers that for the transport alone, without artifactd's own work in the way: one
server process per model (`grpc.server` with a thread pool, `grpc.aio.server`) offers the same two
raw-bytes methods, a client-streaming upload and a server-streaming download of SIZE bytes in 1 MiB
messages (artifactd's chunk size), with and without a sha256 of every byte on the server (the work
artifactd's server does per byte; on the aio server it runs in a worker thread, as it would have to,
so the event loop keeps serving). The client is the same synchronous grpc client in both cases.

    RUNS=5 SIZE=1GiB .venv/bin/python bench/grpc_server_models.py

prints a table (median and min-max of wall seconds, MB/s, server and client CPU seconds) and writes
it with the raw samples to BENCH_RESULTS (default bench/results) as grpc-models-<time>.{json,md}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import parse_size

CHUNK = 1 << 20
SERVICE = "bench.Bytes"
OPTIONS = [
    ("grpc.max_receive_message_length", 4 * CHUNK),
    ("grpc.max_send_message_length", 4 * CHUNK),
]


def _identity(data: bytes) -> bytes:
    return data


def _hashing(context: Any) -> bool:
    """Whether the client asked for the server to hash what it moves (metadata `work`)."""
    return dict(context.invocation_metadata()).get("work") == "sha256"


# -- servers -----------------------------------------------------------------------------------


def _sync_handlers() -> grpc.GenericRpcHandler:
    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        hashing = _hashing(context)
        digest, total = hashlib.sha256(), 0
        for chunk in requests:
            total += len(chunk)
            if hashing:
                digest.update(chunk)
        return str(total).encode()

    def download(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        hashing = _hashing(context)
        size, block, digest = int(request), os.urandom(CHUNK), hashlib.sha256()
        for _ in range(size // CHUNK):
            if hashing:
                digest.update(block)
            yield block

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Upload": grpc.stream_unary_rpc_method_handler(upload, _identity, _identity),
            "Download": grpc.unary_stream_rpc_method_handler(download, _identity, _identity),
        },
    )


def _aio_handlers() -> grpc.GenericRpcHandler:
    async def upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
        hashing = _hashing(context)
        digest, total = hashlib.sha256(), 0
        async for chunk in requests:
            total += len(chunk)
            if hashing:
                await asyncio.to_thread(digest.update, chunk)
        return str(total).encode()

    async def download(request: bytes, context: Any) -> AsyncIterator[bytes]:
        hashing = _hashing(context)
        size, block, digest = int(request), os.urandom(CHUNK), hashlib.sha256()
        for _ in range(size // CHUNK):
            if hashing:
                await asyncio.to_thread(digest.update, block)
            yield block

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Upload": grpc.stream_unary_rpc_method_handler(upload, _identity, _identity),
            "Download": grpc.unary_stream_rpc_method_handler(download, _identity, _identity),
        },
    )


def serve(model: str, port_file: str) -> None:
    if model == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=OPTIONS)
        server.add_generic_rpc_handlers((_sync_handlers(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        Path(port_file).write_text(str(port))
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers((_aio_handlers(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        Path(port_file).write_text(str(port))
        await server.wait_for_termination()

    asyncio.run(main())


# -- driver ------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _start(model: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / f"{model}.port"
    process = subprocess.Popen(
        [sys.executable, __file__, "serve", model, str(port_file)], stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {model} server did not start")
        time.sleep(0.05)
    return process, f"127.0.0.1:{port_file.read_text()}"


def _transfer(channel: grpc.Channel, direction: str, work: str, size: int) -> None:
    metadata = (("work", work),)
    if direction == "upload":
        block = os.urandom(CHUNK)
        call = channel.stream_unary(f"/{SERVICE}/Upload", _identity, _identity)
        reply = call((block for _ in range(size // CHUNK)), metadata=metadata, timeout=600)
        assert int(reply) == size, reply
    else:
        call2 = channel.unary_stream(f"/{SERVICE}/Download", _identity, _identity)
        received = sum(len(c) for c in call2(str(size).encode(), metadata=metadata, timeout=600))
        assert received == size, received


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
        return
    runs, size = int(os.environ.get("RUNS", "5")), parse_size(os.environ.get("SIZE", "1GiB"))
    results_dir = Path(os.environ.get("BENCH_RESULTS", Path(__file__).parent / "results"))
    load_before = os.getloadavg()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        servers = {model: _start(model, Path(scratch)) for model in ("sync", "aio")}
        try:
            channels = {
                m: grpc.insecure_channel(t, options=OPTIONS) for m, (_, t) in servers.items()
            }
            cases = [(d, w) for d in ("upload", "download") for w in ("bare", "sha256")]
            for round_number in range(runs + 1):  # round 0 warms up, unrecorded
                order = ["sync", "aio"] if round_number % 2 else ["aio", "sync"]
                for direction, work in cases:
                    for model in order:
                        pid = servers[model][0].pid
                        time.sleep(0.5)
                        server_cpu, client_cpu = _cpu_seconds(pid), _own_cpu()
                        started = time.perf_counter()
                        _transfer(channels[model], direction, work, size)
                        seconds = time.perf_counter() - started
                        if round_number:
                            samples.append({
                                "model": model, "direction": direction, "work": work,
                                "seconds": seconds,
                                "server_cpu": _cpu_seconds(pid) - server_cpu,
                                "client_cpu": _own_cpu() - client_cpu,
                            })  # fmt: skip
            for channel in channels.values():
                channel.close()
        finally:
            for process, _target in servers.values():
                process.kill()
                process.wait()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    markdown = _table(samples, runs, size, load_before, os.getloadavg())
    print(markdown)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"grpc-models-{stamp}.md").write_text(markdown)
    (results_dir / f"grpc-models-{stamp}.json").write_text(
        json.dumps({"runs": runs, "size": size, "samples": samples}, indent=1) + "\n"
    )


def _table(
    samples: list[dict[str, Any]],
    runs: int,
    size: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> str:
    def spread(values: list[float], digits: int = 2) -> str:
        low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
        return f"{statistics.median(values):.{digits}f} ({low}-{high})"

    lines = [
        "### grpc.server (thread pool) vs grpc.aio.server, "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "",
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, grpcio {grpc.__version__}; "
        f"{size / 2**30:g} GiB in 1 MiB messages over loopback, {runs} recorded rounds after 1 "
        f"warm-up, models alternated; load average {load_before[0]:.2f} → {load_after[0]:.2f}. "
        "Median (min-max).",
        "",
        "| direction | server work | model | seconds | MB/s | server CPU s | client CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for direction in ("upload", "download"):
        for work in ("bare", "sha256"):
            for model in ("sync", "aio"):
                picked = [
                    s for s in samples
                    if (s["model"], s["direction"], s["work"]) == (model, direction, work)
                ]  # fmt: skip
                seconds = [s["seconds"] for s in picked]
                rates = [size / 1e6 / s for s in seconds]
                lines.append(
                    f"| {direction} | {work} | {model} | {spread(seconds)} | {spread(rates, 0)} | "
                    f"{spread([s['server_cpu'] for s in picked])} | "
                    f"{spread([s['client_cpu'] for s in picked])} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
