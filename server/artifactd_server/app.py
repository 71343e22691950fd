"""Builds, runs and drains the gRPC server.

Shutdown order on SIGTERM/SIGINT, as a load balancer or a mesh expects it: health flips to
NOT_SERVING for every service, the server stops accepting new calls, in-flight transfers get
`grace_period` seconds to finish (an upload cut off after that publishes nothing), and the
process exits 0. A second signal skips the wait.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from artifactd.protocol import environment, malloc
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc
from artifactd_server import tls
from artifactd_server.api.artifacts import ArtifactServicer
from artifactd_server.api.path_length import PathLengthInterceptor
from artifactd_server.api.request_decoding import RequestDecodingInterceptor
from artifactd_server.api.runs import RunServicer
from artifactd_server.auth.authenticator import Authenticator, AuthSettings
from artifactd_server.auth.concurrency import PrincipalSlots
from artifactd_server.auth.interceptor import AuthInterceptor, Decider
from artifactd_server.auth.resources import Resources
from artifactd_server.domain import limits
from artifactd_server.domain.multipart import DirectUploads, Settings
from artifactd_server.domain.resumable import ResumableUploads
from artifactd_server.domain.roots import ArtifactRoots
from artifactd_server.domain.scopes import Scopes
from artifactd_server.domain.streamed import StreamedUploads
from artifactd_server.observability import (
    Metrics,
    ObservingInterceptor,
    ReplicaCollector,
    UploadSessionsCollector,
    meter_storage,
)
from artifactd_server.storage import open_storage
from artifactd_server.store.database import (
    DEFAULT_TIMEOUT,
    open_database,
    outage_reason,
    redact,
)
from artifactd_server.store.tracking import TrackingStore
from artifactd_server.store.upload_sessions import UploadSessions

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ArtifactService"].full_name
RUN_SERVICE_NAME = rpb.DESCRIPTOR.services_by_name["RunService"].full_name
SERVICE_NAMES = (SERVICE_NAME, RUN_SERVICE_NAME)
STALE_UPLOAD_AGE = 24 * 3600.0
"""Age at which the start-up sweep removes what storage holds of uploads nothing recorded (it
cannot tell a dead replica's from a live one's sooner); recorded ones expire by their TTLs."""


@dataclass(frozen=True)
class ServerConfig:
    """Every setting of `artifactd serve`; the defaults are the documented embedded defaults."""

    host: str = "127.0.0.1"
    port: int = 50051
    artifacts_destination: str = environment.ARTIFACTS_DESTINATION.default
    backend_store_uri: str = environment.BACKEND_STORE_URI.default
    backend_store_timeout: float = DEFAULT_TIMEOUT
    extra_artifact_roots: tuple[str, ...] = ()
    grace_period: float = 30.0
    max_workers: int = 64
    reflection: bool = True
    fsync: bool = True
    direct_io: bool = True  # large local files bypass the page cache (artifactd.protocol.directio)
    port_file: str | None = None
    presigned_url_ttl: float = 900.0
    multipart_session_ttl: float = 24 * 3600.0
    streamed_upload_ttl: float = 600.0
    presigned_download_ttl: float = 300.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth: AuthSettings = field(default_factory=AuthSettings)
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    metrics_host: str | None = None  # None: the same as `host`
    metrics_port_file: str | None = None
    replica_name: str | None = None  # None: the host name

    @property
    def replica(self) -> str:
        return self.replica_name or socket.gethostname()

    log_format: str = "text"  # or "json"; applied by the `serve` command
    log_level: str = "INFO"  # applied by the `serve` command (and by each --workers process)
    workers: int = 1  # processes sharing the port (SO_REUSEPORT); see workers.py
    sweeper: bool = True  # expired-session sweeps; one worker runs them, not every one
    drain_delay: float = 0.0  # seconds NOT_SERVING is reported before new calls are refused
    connections: limits.ConnectionSettings = field(default_factory=limits.ConnectionSettings)
    request_limits: limits.RequestLimits = field(default_factory=limits.RequestLimits)


class ArtifactServer:
    """The gRPC server with the artifact, health and reflection services."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.database = open_database(config.backend_store_uri, config.backend_store_timeout)
        self.metrics = Metrics()
        storages = [
            meter_storage(
                open_storage(root, fsync=config.fsync, direct_io=config.direct_io), self.metrics
            )
            for root in (config.artifacts_destination, *config.extra_artifact_roots)
        ]
        self.roots = ArtifactRoots(storages)
        self.storage = self.roots.default
        store = TrackingStore(self.database)
        sessions = UploadSessions(self.database)
        self.metrics.registry.register(UploadSessionsCollector(self.database))
        self.metrics.registry.register(ReplicaCollector(config.replica))
        self.authenticator = Authenticator(config.auth)  # bad credential files stop start-up
        decider = Decider(Resources(store, self.roots, sessions))
        self._committer = ThreadPoolExecutor(8, thread_name_prefix="commit")
        self._server = grpc.server(
            ThreadPoolExecutor(config.max_workers, thread_name_prefix="rpc"),
            interceptors=[
                ObservingInterceptor(self.metrics),  # first: sees every call, refused ones too
                # second: sets the deserializer gRPC uses (upload chunks without copies), and
                # no handler, authentication included, sees an undecodable request
                RequestDecodingInterceptor(self.metrics.undecodable_requests),
                PathLengthInterceptor(config.request_limits.max_path_length),  # syntax: before auth
                AuthInterceptor(self.authenticator, decider, _slots(config.request_limits)),
            ],
            options=limits.grpc_options(config.connections, config.request_limits.max_message_size),
            maximum_concurrent_rpcs=config.connections.max_concurrent_rpcs,
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        scopes = Scopes(self.roots, store)
        settings = Settings(
            url_ttl=config.presigned_url_ttl,
            session_ttl=config.multipart_session_ttl,
            download_ttl=config.presigned_download_ttl,
        )
        self.direct = DirectUploads(scopes, sessions, settings)
        resumable = ResumableUploads(scopes, sessions, settings)
        streamed = StreamedUploads(sessions, config.streamed_upload_ttl)
        self._stopping = threading.Event()
        self._servicer = ArtifactServicer(
            scopes, self._committer, self.direct, resumable, streamed, config.request_limits
        )
        pb_grpc.add_ArtifactServiceServicer_to_server(self._servicer, self._server)
        run_servicer = RunServicer(store, self.roots, self._servicer.in_flight, self.direct)
        rpb_grpc.add_RunServiceServicer_to_server(run_servicer, self._server)
        if config.reflection:
            reflection.enable_server_reflection(
                (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
            )
        self.port = 0

    def start(self) -> int:
        """Binds and starts serving; returns the bound port (useful with port 0)."""
        address = f"{_bracket(self.config.host)}:{self.config.port}"
        config = self.config
        credentials = tls.server_credentials(
            tls.TlsFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
        )
        warning = tls.exposure_warning(
            config.host, credentials is not None, self.authenticator.enabled
        )
        if warning:
            log.warning(warning)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"could not listen on {address}")
        self._server.start()
        for service in ("", *SERVICE_NAMES):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if config.sweeper:
            threading.Thread(target=self._sweep, name="sweep", daemon=True).start()
        log.info(
            "artifactd listening on %s:%d, artifacts in %s, backend store %s",
            self.config.host,
            self.port,
            ", ".join(self.roots.uris),
            redact(self.config.backend_store_uri),
        )
        if config.metrics_port is not None:
            metrics_host = config.metrics_host or config.host
            metrics_port = self.metrics.serve(metrics_host, config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", _bracket(metrics_host), metrics_port)
            if config.metrics_port_file:
                write_atomically(config.metrics_port_file, f"{metrics_port}\n")
        if self.config.port_file:
            write_atomically(self.config.port_file, f"{self.port}\n")
        return self.port

    def _sweep(self) -> None:
        self._sweep_storage()
        # Expired sessions, and records of streams whose server died: checked often, since
        # their parts occupy storage.
        shortest = min(self.config.multipart_session_ttl, self.config.streamed_upload_ttl)
        interval = min(60.0, max(0.5, shortest / 4))
        while not self._stopping.wait(interval):
            try:
                self.direct.sweep()
            except Exception as exc:
                reason = outage_reason(exc)
                if reason is None:
                    log.exception("aborting expired multipart uploads failed")
                else:  # one line per round until the database is back, not a traceback
                    log.warning("sweep skipped: the backend store is unavailable: %s", reason)

    def _sweep_storage(self) -> None:
        for storage in self.roots.storages:
            try:
                removed = storage.sweep_incomplete_uploads(STALE_UPLOAD_AGE)
            except Exception:
                log.exception("sweeping incomplete uploads in %s failed", storage.uri)
                continue
            if removed:
                log.info("removed %d files of uploads interrupted by an earlier crash", removed)

    def stop(self, grace: float | None = None) -> None:
        """Drains: NOT_SERVING, no new calls, `grace` seconds for running ones, then stops."""
        self._health.enter_graceful_shutdown()
        self._stopping.set()
        if self.config.drain_delay:  # balancers and probes see NOT_SERVING and move away first
            time.sleep(self.config.drain_delay)
        grace = self.config.grace_period if grace is None else grace
        stopped = self._server.stop(grace)
        # Transfers done before the grace ends: cut the calls left (health watches) right away.
        if self._servicer.in_flight.wait_idle(grace):
            self._server.stop(0)
        stopped.wait()
        self._committer.shutdown(wait=True)
        for storage in self.roots.storages:
            storage.close()
        self.metrics.close()
        self.database.close()

    def wait(self) -> None:
        self._server.wait_for_termination()


def serve(config: ServerConfig) -> int:
    """Runs one server process until SIGTERM or SIGINT, then drains; returns the exit code.

    `--workers N` runs N of these under `workers.run`, which imports this module (never the
    reverse)."""
    malloc.bound_server_heap()  # before the thread pools exist and allocate
    server = ArtifactServer(config)
    stop_requested = threading.Event()
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: stopping without waiting for transfers")
            os._exit(1)
        log.info(
            "%s received: draining for up to %.0fs",
            signal.Signals(signum).name,
            config.grace_period,
        )
        stop_requested.set()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.authenticator.reload, name="reload").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    server.start()
    while not stop_requested.wait(3600):
        pass
    server.stop()
    log.info("artifactd stopped")
    return 0


def _slots(request_limits: limits.RequestLimits) -> PrincipalSlots | None:
    per_principal = request_limits.max_calls_per_principal
    return None if per_principal is None else PrincipalSlots(per_principal)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def write_atomically(path: str, text: str) -> None:
    temp = f"{path}.tmp{os.getpid()}"
    with open(temp, "w") as fh:
        fh.write(text)
    os.replace(temp, path)
