"""Transfer limits the server enforces and advertises through GetCapabilities.

Chunk size: 1 MiB per download message (the client picks its own for uploads, also 1 MiB by
default). 256 KiB had measured faster only while glibc trimmed the heap after every freed message
(see `artifactd.protocol.malloc.bound_server_heap`); with that fixed, 1 MiB moves a 1 GiB download
in 1.8-2.3 s instead of 2.4-2.5 s with less CPU on both sides. `bench/` re-measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifactd.protocol.paths import MAX_PATH_BYTES, InvalidPath

KiB = 1024
MiB = 1024 * KiB

CHUNK_SIZE = 1 * MiB
MAX_MESSAGE_SIZE = 16 * MiB
MAX_BATCH_FILES = 10_000
DEFAULT_PAGE_SIZE = 1_000
MAX_PAGE_SIZE = 10_000
DIGEST_FUNCTION = "sha256"
UPLOAD_CHECKSUMS = ("sha256", "crc32c")
"""What an UploadFinish may declare for the server to verify (GetCapabilities)."""
MAX_ARTIFACT_SIZE = 5 * 1024**4
"""Largest file the server takes (5 TiB, the largest object S3 and GCS store): a declared size
above it is refused when the upload starts, not after terabytes were sent (GetCapabilities)."""
PACKED_FILE_MAX = 256 * KiB
"""Largest file a DownloadArtifacts stream sends packed with others (`accept_packed_files`);
a packed message holds files until it reaches `CHUNK_SIZE`, so it stays under 1.25 MiB."""

PACKED_MAX_FILES = 1_000
"""Most files one packed DownloadArtifacts message holds: a directory of empty files never
fills `CHUNK_SIZE`, and their FileInfos alone would otherwise grow one message without bound."""

UPLOAD_WINDOW = 2 * MiB


@dataclass(frozen=True)
class RequestLimits:
    """What one request, stream or caller may use; each is an option of `artifactd serve` and
    the first three are advertised through GetCapabilities."""

    max_message_size: int = MAX_MESSAGE_SIZE
    """Largest gRPC message received or sent: bounds the memory one message takes."""
    max_path_length: int = MAX_PATH_BYTES
    """Longest artifact path in UTF-8 bytes; at most the protocol's own limit."""
    max_batch_files: int = MAX_BATCH_FILES
    """Files one LogArtifacts stream may carry."""
    max_calls_per_principal: int | None = None
    """Calls one authenticated principal may have in progress at once (per process; None: no
    limit), so one caller cannot hold every worker thread."""


def check_path_length(path: str, limit: int) -> None:
    """`InvalidPath` when `path` is longer than this server takes (the protocol's own limit is
    checked by `paths.parse`)."""
    if limit >= MAX_PATH_BYTES:
        return  # the protocol's limit: `paths.parse` refuses in its own words
    size = len(path.encode(errors="surrogatepass"))
    if size > limit:
        raise InvalidPath(
            f"path is {size} bytes long; this server takes at most {limit} (--max-path-length)"
        )


@dataclass(frozen=True)
class ConnectionSettings:
    """Per-connection behaviour a mesh or an L4 balancer cares about (seconds; None: gRPC's
    default, which for the connection-age settings is forever)."""

    keepalive_time: float = 120.0
    keepalive_timeout: float = 20.0
    max_connection_idle: float | None = 600.0
    """Connections without a call this long get a GOAWAY (clients reconnect on their next call):
    an idle connection holds a descriptor and memory for nothing."""
    handshake_timeout: float = 10.0
    """A connection that has not finished its TLS and HTTP/2 handshake in this time is closed:
    bare or half-opened TCP connections (a scan, a hostile client) otherwise stay 120 s."""
    max_connections: int = 1000
    """Connections the process holds at once; more are closed as they arrive. Bounded so that
    connections alone cannot use up the descriptors uploads and downloads need."""
    max_connection_age: float | None = None
    max_connection_age_grace: float | None = None
    max_concurrent_streams: int = 100
    max_concurrent_rpcs: int | None = None


def grpc_options(
    settings: ConnectionSettings, max_message_size: int = MAX_MESSAGE_SIZE
) -> list[tuple[str, int]]:
    """`GRPC_OPTIONS` plus the connection settings, as gRPC channel arguments."""
    options = [
        ("grpc.max_receive_message_length", max_message_size),
        ("grpc.max_send_message_length", max_message_size),
        *GRPC_OPTIONS,
        ("grpc.keepalive_time_ms", _ms(settings.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(settings.keepalive_timeout)),
        # Our clients ping every 60 s, also while a long call sends nothing (a big GC); the
        # default 5 minutes between such pings would answer them with GOAWAY too_many_pings.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.server_handshake_timeout_ms", _ms(settings.handshake_timeout)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
    ]
    for name, value in (
        ("grpc.max_connection_idle_ms", settings.max_connection_idle),
        ("grpc.max_connection_age_ms", settings.max_connection_age),
        ("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace),
    ):
        if value is not None:
            options.append((name, _ms(value)))
    return options


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


GRPC_OPTIONS: list[tuple[str, int]] = [
    # Each upload stream's receive window is a fixed 2 MiB instead of what gRPC's bandwidth
    # probe grows it to: with the probe, uploads that outran the server's disk piled up in its
    # memory (4 concurrent 1 GiB uploads: peak RSS 352-404 MB; measured here with a fixed
    # 4 MiB window: 140-153 MB and 15 % faster; one upload as fast, 3.5-3.6 s per GiB either
    # way). 2 MiB (two 1 MiB messages) against 4 MiB, alternating on one server: 4 concurrent
    # 1 GiB uploads peaked 14 MiB lower (144-156 against 158-170 MiB) in the same 5.5-5.9 s, and
    # one 1 GiB upload took 1.41-1.69 s against 1.40-1.58 s (medians of 5, within the noise).
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", UPLOAD_WINDOW),
]
