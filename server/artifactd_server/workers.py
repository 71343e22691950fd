"""`--workers N`: N server processes on one port, so one host's cores all serve.

Python serves a transfer on one core at a time (hashing and message handling hold the GIL), so a
single process caps a host at about one core of uploads. The kernel spreads new connections over
every socket bound to a port with SO_REUSEPORT (gRPC sets it on Linux), so N independent
processes share the load without a proxy.

The supervisor migrates the backend store once (workers would otherwise race to do it), reserves
the port (so `--port 0` gives every worker the same one), starts the workers with the `spawn`
method (gRPC does not survive `fork`), writes `--port-file` once all of them serve, forwards
SIGTERM/SIGINT/SIGHUP, and exits 0 only if every worker drained cleanly. One worker runs the
expired-session sweeper. With metrics on, the workers record them in a fresh multiprocess
directory (`PROMETHEUS_MULTIPROC_DIR`, set before they start) and the supervisor alone serves
`--metrics-port`, merged: one scrape sees the sum over the workers (observability/metrics.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from artifactd_server.app import ServerConfig, serve, write_atomically
from artifactd_server.observability import (
    MergedMetrics,
    ReplicaCollector,
    UploadSessionsCollector,
    fresh_multiprocess_dir,
)
from artifactd_server.observability.logs import configure_logging
from artifactd_server.settings import METRICS_MULTIPROC_DIR
from artifactd_server.store.database import open_database

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0


def run(config: ServerConfig) -> int:
    """`artifactd serve`: one process, or with --workers N a supervisor and N workers."""
    return supervise(config) if config.workers > 1 else serve(config)


def supervise(config: ServerConfig) -> int:
    database = open_database(
        config.backend_store_uri, config.backend_store_timeout
    )  # migrates a new database, once
    try:
        with contextlib.ExitStack() as stack:
            metrics = None
            if config.metrics_port is not None:
                metrics = MergedMetrics(
                    _metrics_dir(stack),
                    (UploadSessionsCollector(database), ReplicaCollector(config.replica)),
                )
                stack.callback(metrics.close)
            return _supervise(config, metrics)
    finally:
        database.close()


def _metrics_dir(stack: contextlib.ExitStack) -> str:
    """The workers' multiprocess directory, emptied, in the environment they inherit: the
    operator's `PROMETHEUS_MULTIPROC_DIR`, or a temporary one removed at exit."""
    directory = METRICS_MULTIPROC_DIR.get()
    if not directory:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="artifactd-metrics-"))
    fresh_multiprocess_dir(directory)
    os.environ[METRICS_MULTIPROC_DIR.name] = directory
    return directory


def _supervise(config: ServerConfig, metrics: MergedMetrics | None) -> int:
    reservation, port = _reserve(config.host, config.port)
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="artifactd-workers-") as ready_dir:
        workers = [
            context.Process(
                target=_run_worker,
                args=(_worker_config(config, index, port, Path(ready_dir)),),
                name=f"artifactd-worker-{index}",
            )
            for index in range(config.workers)
        ]
        for worker in workers:
            worker.start()
        forwarded = _forward_signals(workers)
        try:
            if not _wait_ready(workers, Path(ready_dir)):
                _stop_all(workers, signal.SIGTERM)
                _join_all(workers, config.grace_period + 10)
                return 1
        finally:
            reservation.close()
        log.info("%d workers serving on port %d", len(workers), port)
        if metrics is not None:
            _serve_metrics(config, metrics)
        if config.port_file:
            write_atomically(config.port_file, f"{port}\n")
        codes = _join_all(workers, None)
        if metrics is not None:
            for worker in workers:
                if worker.pid is not None:
                    metrics.process_gone(worker.pid)
    for signum, previous in forwarded.items():
        signal.signal(signum, previous)
    failed = {w.name: c for w, c in zip(workers, codes, strict=True) if c != 0}
    if failed:
        log.error("workers exited with errors: %s", failed)
        return 1
    return 0


def _serve_metrics(config: ServerConfig, metrics: MergedMetrics) -> None:
    host = config.metrics_host or config.host
    assert config.metrics_port is not None
    bound = metrics.serve(host, config.metrics_port)
    log.info("metrics of all workers on http://%s:%d/metrics", host, bound)
    if config.metrics_port_file:
        write_atomically(config.metrics_port_file, f"{bound}\n")


def _reserve(host: str, port: int) -> tuple[socket.socket, int]:
    """A bound (not listening) SO_REUSEPORT socket holding the port while the workers bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"could not listen on {host}:{port}: {exc.strerror}") from None
    return sock, sock.getsockname()[1]


def _worker_config(config: ServerConfig, index: int, port: int, ready_dir: Path) -> ServerConfig:
    return dataclasses.replace(
        config,
        workers=1,
        port=port,
        port_file=str(ready_dir / f"worker-{index}"),
        sweeper=index == 0,
        metrics_port=None,  # recorded in the multiprocess directory, served by the supervisor
        metrics_port_file=None,
    )


def _run_worker(config: ServerConfig) -> None:
    # Signals come from the supervisor only: a terminal's Ctrl-C would otherwise arrive twice
    # (directly and forwarded), which a server takes as "stop without draining".
    os.setsid()
    _die_with_parent()
    configure_logging(config.log_level, config.log_format)
    os._exit(serve(config))  # exit at once: the parent reads the code, nothing else to unwind


def _die_with_parent() -> None:
    """SIGTERM (a drain) for this worker if the supervisor dies without forwarding one."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the supervisor on this platform")


_Handler = Callable[[int, FrameType | None], Any] | int | None


def _forward_signals(workers: Sequence[BaseProcess]) -> dict[signal.Signals, _Handler]:
    def forward(signum: int, frame: FrameType | None) -> None:
        _stop_all(workers, signal.Signals(signum))

    previous: dict[signal.Signals, _Handler] = {}
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[signum] = signal.signal(signum, forward)
    return previous


def _stop_all(workers: Sequence[BaseProcess], signum: signal.Signals) -> None:
    for worker in workers:
        if worker.pid is not None and worker.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)


def _wait_ready(workers: Sequence[BaseProcess], ready_dir: Path) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if all((ready_dir / f"worker-{i}").exists() for i in range(len(workers))):
            return True
        dead = [w for w in workers if w.exitcode is not None]
        if dead:
            log.error("%s exited with %s before serving", dead[0].name, dead[0].exitcode)
            return False
        time.sleep(0.05)
    log.error("the workers did not all start within %.0fs", START_TIMEOUT)
    return False


def _join_all(workers: Sequence[BaseProcess], timeout: float | None) -> list[int]:
    codes = []
    for worker in workers:
        worker.join(timeout)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
        codes.append(worker.exitcode if worker.exitcode is not None else 1)
    return codes
