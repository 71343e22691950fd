"""Every environment variable the client distribution reads: one declarative table.

The code reads each variable through its `Variable` here (`SERVER.get()`, `RPC_TIMEOUT.default`),
the CLI's global options are built from the entries that have a `flag`, and
`scripts/gen_config_docs.py` renders the configuration reference from this table and the
server's (`artifactd_server.settings`). A variable that is not in a table is therefore neither
read nor documented, and a default cannot differ between the code and the page (a test scans
the source for variable names that miss a table).

It lives in the protocol layer because the server shares a few entries (the `artifactd serve`
and `artifactd gc` locations) and may import nothing else of the client, and because the CLI's
root command names these variables in its help without importing grpc or the client library:
this module imports only the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One environment variable: its name, the default the code uses, and what it means.

    Parsing and validation stay with the code that uses the value (their errors name the
    variable); what is here is what must be the same in the code and in the documentation.
    """

    name: str
    default: T
    help: str
    """One sentence or two for the reference: what the value does, not how it is parsed."""
    group: str
    """The heading the reference lists it under."""
    flag: str | None = None
    """The command-line option that sets the same thing (the option wins)."""
    shown_default: str | None = None
    """How the reference states the default when the value alone would say too little."""
    mlflow: str | None = None
    """For names MLflow also reads: how its meaning there compares."""
    reader: str | None = None
    """A library that reads the variable itself: artifactd documents it but never reads it."""

    def get(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The raw value (None when unset), from `environ` or the process environment."""
        return (os.environ if environ is None else environ).get(self.name)

    @property
    def documented_default(self) -> str:
        """The default as the reference shows it: `shown_default`, else the value in code."""
        if self.shown_default is not None:
            return self.shown_default
        return describe_default(self.default)


def describe_default(value: Any) -> str:
    """A default value as Markdown: on/off for switches, nothing for None, code otherwise."""
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


MiB = 1024 * 1024

_CONNECTION = "Server and connection"
_TIMEOUTS = "Deadlines and retries"
_TRANSFERS = "Transfers"
_DIRECT = "Direct and resumable transfers"
_CHECKS = "Client-side storage variables (warned about, never used)"
_LOCATIONS = "Shared by artifactd serve and artifactd gc"
_MLFLOW_SERVER = "The MLflow plugin inside `mlflow server`"

# -- server and connection ---------------------------------------------------------------------

SERVER = Variable(
    "ARTIFACTD_SERVER",
    "127.0.0.1:50051",
    "The server of the CLI's client commands and of `ArtifactClient()` / `TrackingClient()` "
    "without a target; also the server of `artifactd:/path` URIs (no host) in the MLflow plugin. "
    "`HOST:PORT`; replicas as a list of IP addresses `10.0.0.1:50051,10.0.0.2:50051` or a gRPC "
    "target URI (`dns:///NAME:PORT`, `ipv4:ADDR:PORT,ADDR:PORT`, `ipv6:[ADDR]:PORT`, "
    "`unix:PATH`), balanced by gRPC itself: round robin, replicas that are down or draining "
    "left out.",
    _CONNECTION,
    flag="--server",
)
TLS = Variable(
    "ARTIFACTD_TLS",
    False,
    "`1`: connect with TLS, checking the server's certificate against the system's CA store.",
    _CONNECTION,
    flag="--tls",
)
TLS_CA: Variable[str | None] = Variable(
    "ARTIFACTD_TLS_CA",
    None,
    "PEM CA bundle the server's certificate must chain to; implies TLS.",
    _CONNECTION,
    flag="--tls-ca",
)
CLIENT_CERT: Variable[str | None] = Variable(
    "ARTIFACTD_CLIENT_CERT",
    None,
    "PEM client certificate for mutual TLS (with `ARTIFACTD_CLIENT_KEY`); implies TLS.",
    _CONNECTION,
    flag="--client-cert",
)
CLIENT_KEY: Variable[str | None] = Variable(
    "ARTIFACTD_CLIENT_KEY",
    None,
    "PEM private key of `ARTIFACTD_CLIENT_CERT`.",
    _CONNECTION,
    flag="--client-key",
)
TOKEN: Variable[str | None] = Variable(
    "ARTIFACTD_TOKEN",
    None,
    "Bearer token (or JWT) sent with every call as `authorization: Bearer …`; never logged.",
    _CONNECTION,
)
TOKEN_FILE: Variable[str | None] = Variable(
    "ARTIFACTD_TOKEN_FILE",
    None,
    "File whose first line is the token, e.g. a mounted secret (when `ARTIFACTD_TOKEN` is unset).",
    _CONNECTION,
    flag="--token-file",
)

# -- deadlines and retries ---------------------------------------------------------------------

TRANSFER_TIMEOUT: Variable[float | None] = Variable(
    "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT",
    None,
    "Deadline in seconds of each upload or download call; `-1`: none.",
    _TIMEOUTS,
    shown_default="unset: no deadline",
    mlflow="MLflow: the timeout of GCS, Azure Blob and ADLS requests; on the artifactd server, "
    "of every storage request",
)
RPC_TIMEOUT = Variable(
    "ARTIFACTD_RPC_TIMEOUT",
    60.0,
    "Deadline in seconds of metadata calls (list, stat, delete, runs); `-1`: none.",
    _TIMEOUTS,
)
MAX_RETRIES = Variable(
    "ARTIFACTD_MAX_RETRIES",
    5,
    "Retries, with exponential backoff (or the server's suggested delay, at most 30 s), while "
    "the server is UNAVAILABLE: only calls that are safe to repeat (list, stat, delete, "
    "downloads, which resume from the last byte received, resumable uploads, which continue "
    "from what the server holds, and uploads of local files and directories, sent again whole: "
    "a stream cut before its end never publishes); streamed uploads (`log_stream`, fsspec "
    "writes, the MLflow proxy's) cannot be replayed and are not retried.",
    _TIMEOUTS,
)

# -- transfers ---------------------------------------------------------------------------------

CHUNK_SIZE = Variable(
    "ARTIFACTD_CHUNK_SIZE",
    1 * MiB,
    "Bytes per upload message (1 KiB to 8 MiB).",
    _TRANSFERS,
)
DIRECT_IO = Variable(
    "ARTIFACTD_DIRECT_IO",
    True,
    "`0`: downloads write large files through the page cache (on: past their first 8 MiB, "
    "around it with `O_DIRECT`).",
    _TRANSFERS,
)
TUNE_MALLOC = Variable(
    "ARTIFACTD_TUNE_MALLOC",
    True,
    "`0` keeps the client from raising glibc's malloc trim and mmap thresholds in its process "
    "(raised, freed message buffers are reused instead of returned to the kernel).",
    _TRANSFERS,
)
STRICT_ENV = Variable(
    "ARTIFACTD_STRICT_ENV",
    False,
    "`1`: raise instead of warning when a client-side storage variable (below) is set.",
    _CHECKS,
)

# -- direct and resumable transfers ------------------------------------------------------------

MULTIPART_UPLOAD = Variable(
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
    True,
    "`false`: always stream uploads through the server, never straight to storage.",
    _DIRECT,
    mlflow="same; MLflow's default is off unless set or detected",
)
MULTIPART_UPLOAD_MINIMUM = Variable(
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE",
    500 * MiB,
    "Files this large go straight to storage in presigned parts where the storage can presign "
    "(S3, GCS, Azure Blob).",
    _DIRECT,
    mlflow="same, same default",
)
MULTIPART_UPLOAD_PART = Variable(
    "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE",
    64 * MiB,
    "Part size asked for; the server raises it to the backend's minimum and part count.",
    _DIRECT,
    mlflow="same; MLflow's default is 10 MiB",
)
MULTIPART_WORKERS = Variable(
    "ARTIFACTD_MULTIPART_WORKERS",
    4,
    "Parts (and download ranges) in flight at once (1 to 64).",
    _DIRECT,
)
STATE_DIR: Variable[str | None] = Variable(
    "ARTIFACTD_STATE_DIR",
    None,
    "Where an open direct or resumable upload is remembered, so that a rerun after a crash "
    "resumes it.",
    _DIRECT,
    shown_default="`~/.cache/artifactd/uploads`",
)
RESUMABLE_MINIMUM = Variable(
    "ARTIFACTD_RESUMABLE_MINIMUM_FILE_SIZE",
    64 * MiB,
    "Files this large go through the server as resumable uploads where the storage cannot take "
    "direct ones (local disk, NFS, FTP, SFTP, HDFS).",
    _DIRECT,
)
MULTIPART_DOWNLOAD = Variable(
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
    True,
    "`false`: always download through the server.",
    _DIRECT,
    mlflow="same; MLflow's default is off unless set or detected",
)
MULTIPART_DOWNLOAD_MINIMUM = Variable(
    "MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE",
    500 * MiB,
    "Files this large are fetched straight from storage with parallel range GETs of a "
    "presigned URL.",
    _DIRECT,
    mlflow="same, same default",
)
MULTIPART_DOWNLOAD_CHUNK = Variable(
    "MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE",
    100 * MiB,
    "Bytes per range GET of a direct download.",
    _DIRECT,
    mlflow="same, same default",
)
PRESIGNED_IGNORE_TLS = Variable(
    "MLFLOW_S3_IGNORE_TLS",
    False,
    "`true`: no TLS verification of the client's own requests to presigned URLs (never where "
    "artifacts go).",
    _DIRECT,
    mlflow="same",
)
PRESIGNED_CA_BUNDLE: Variable[str | None] = Variable(
    "AWS_CA_BUNDLE",
    None,
    "CA bundle for the client's requests to presigned URLs.",
    _DIRECT,
)
REQUESTS_CA_BUNDLE: Variable[str | None] = Variable(
    "REQUESTS_CA_BUNDLE",
    None,
    "CA bundle for requests to presigned URLs when `AWS_CA_BUNDLE` is unset.",
    _DIRECT,
)

# -- client-side storage variables: warned about, never used -----------------------------------

_IGNORED = (
    "Changes where artifacts go when an MLflow client reads it; an artifactd client warns once "
    "naming it (raises with `ARTIFACTD_STRICT_ENV=1`) and never uses it."
)
RESERVED_STORAGE = tuple(
    Variable(name, None, _IGNORED, _CHECKS, shown_default="—", mlflow=mlflow)
    for name, mlflow in (
        ("MLFLOW_S3_ENDPOINT_URL", "read by MLflow clients and server alike"),
        ("MLFLOW_DEFAULT_ARTIFACT_ROOT", "the tracking server's default root"),
        ("MLFLOW_ARTIFACTS_DESTINATION", "the proxied artifact server's destination"),
        ("MLFLOW_ARTIFACT_URI", "a run's artifact location"),
        ("STORAGE_EMULATOR_HOST", "read by google-cloud-storage"),
        ("AZURE_STORAGE_CONNECTION_STRING", "read by MLflow's Azure repository"),
    )
)
"""Storage variables that change *where* artifacts go when an MLflow client reads them (an
endpoint, a root, a connection string naming an account). Credentials and TLS settings
(`AWS_CA_BUNDLE`, keys) are left alone: many machines set them for other tools, and they cannot
redirect an artifact."""

# -- shared by `artifactd serve` and `artifactd gc` --------------------------------------------

ARTIFACTS_DESTINATION = Variable(
    "ARTIFACTD_ARTIFACTS_DESTINATION",
    "./mlruns",
    "The server's default artifact root: a local or NFS directory, `file:///path`, `s3://…`, "
    "`gs://…`, `wasbs://…`, `ftp://…`, `sftp://…`, `hdfs://…`, or a plugin's scheme.",
    _LOCATIONS,
    flag="--artifacts-destination",
)
EXTRA_ARTIFACT_ROOTS: Variable[tuple[str, ...]] = Variable(
    "ARTIFACTD_EXTRA_ARTIFACT_ROOTS",
    (),
    "Other roots experiments may choose as their location (space-separated).",
    _LOCATIONS,
    flag="--extra-artifact-root",
)
BACKEND_STORE_URI = Variable(
    "ARTIFACTD_BACKEND_STORE_URI",
    "sqlite:///artifactd.db",
    "SQL database of experiments and runs: `sqlite:///path`, `postgresql://user@host/db` or "
    "`mysql://user@host/db` (the SQLite file is relative to the working directory, next to the "
    "default `./mlruns`).",
    _LOCATIONS,
    flag="--backend-store-uri",
)

# -- the MLflow plugin inside `mlflow server` --------------------------------------------------

ALLOWED_HOST_SCHEMES: Variable[None] = Variable(
    "MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES",
    None,
    "Containing `artifactd`: the tracking server may connect to any artifactd server an "
    "experiment names (otherwise only to the one of its own root or destination).",
    _MLFLOW_SERVER,
    mlflow="same, for MLflow's own schemes",
    reader="mlflow (`mlflow.environment_variables`)",
)
MLFLOW_SERVER_ARTIFACT_ROOT: Variable[None] = Variable(
    "_MLFLOW_SERVER_ARTIFACT_ROOT",
    None,
    "Set by `mlflow server` for its workers: marks a tracking-server process, whose "
    "`artifactd://` server (if it names one) the plugin trusts.",
    _MLFLOW_SERVER,
    shown_default="set by `mlflow server`",
)
MLFLOW_SERVER_ARTIFACTS_DESTINATION: Variable[None] = Variable(
    "_MLFLOW_SERVER_ARTIFACT_DESTINATION",
    None,
    "Set by `mlflow server` from `--artifacts-destination`: its `artifactd://` server is "
    "trusted too.",
    _MLFLOW_SERVER,
    shown_default="set by `mlflow server`",
)

CLIENT_VARIABLES: tuple[Variable[Any], ...] = (
    SERVER,
    TLS,
    TLS_CA,
    CLIENT_CERT,
    CLIENT_KEY,
    TOKEN,
    TOKEN_FILE,
    TRANSFER_TIMEOUT,
    RPC_TIMEOUT,
    MAX_RETRIES,
    CHUNK_SIZE,
    DIRECT_IO,
    TUNE_MALLOC,
    MULTIPART_UPLOAD,
    MULTIPART_UPLOAD_MINIMUM,
    MULTIPART_UPLOAD_PART,
    MULTIPART_WORKERS,
    STATE_DIR,
    RESUMABLE_MINIMUM,
    MULTIPART_DOWNLOAD,
    MULTIPART_DOWNLOAD_MINIMUM,
    MULTIPART_DOWNLOAD_CHUNK,
    PRESIGNED_IGNORE_TLS,
    PRESIGNED_CA_BUNDLE,
    REQUESTS_CA_BUNDLE,
    STRICT_ENV,
    *RESERVED_STORAGE,
    ARTIFACTS_DESTINATION,
    EXTRA_ARTIFACT_ROOTS,
    BACKEND_STORE_URI,
    ALLOWED_HOST_SCHEMES,
    MLFLOW_SERVER_ARTIFACT_ROOT,
    MLFLOW_SERVER_ARTIFACTS_DESTINATION,
)
"""The client distribution's table, in the order of the reference."""
