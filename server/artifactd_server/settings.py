"""Every option of `artifactd serve` and every environment variable the server reads: one table.

`artifactd serve`'s click options are built from `SERVE_OPTIONS` (`artifactd_server.cli`), the
storage adapters read their variables through the `Variable`s below, and
`scripts/gen_config_docs.py` renders the configuration reference from these tables and the
client's (`artifactd.protocol.environment`), so the page, `--help` and the code cannot drift
apart.

This module sits at the bottom of the server's layers (the storage adapters import it), so it
names the defaults of the options instead of importing them: `default_of` is a dataclass field
(`"ServerConfig.port"`), which `cli.py` reads from the dataclass itself. The default is defined
once, where the server uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from artifactd.protocol import environment
from artifactd.protocol.environment import Variable

_LISTEN = "Listening and processes"
_STORAGE = "Storage and backend store"
_TRANSFERS = "Transfers"
_TLS = "TLS"
_AUTH = "Authentication"
_CONNECTIONS = "Connections"
_LIMITS = "Request limits"
_OBSERVABILITY = "Logs and metrics"


@dataclass(frozen=True)
class Option:
    """One `artifactd serve` option, with the environment variable that sets it too."""

    flag: str
    """`--name`, or `--name/--no-name` for a switch."""
    variable: str
    help: str
    group: str
    default_of: str | None = None
    """`Class.field` of the dataclass whose field default is the option's; None: unset."""
    type: click.ParamType[Any] | None = None
    multiple: bool = False
    shown_default: str | None = None
    """What an unset option means, for `--help` and the reference (instead of a value)."""
    param: str | None = None
    """The command's parameter, when not the one click derives from the flag."""

    @property
    def name(self) -> str:
        """The command's parameter: `param`, or click's from the flag (`--max-workers` ->
        `max_workers`)."""
        return self.param or self.flag.split("/")[0].removeprefix("--").replace("-", "_")


SERVE_OPTIONS: tuple[Option, ...] = (
    # -- listening and processes
    Option("--host", "ARTIFACTD_HOST", "Address to listen on.", _LISTEN, "ServerConfig.host"),
    Option(
        "--port",
        "ARTIFACTD_PORT",
        "Port to listen on (0: any free port).",
        _LISTEN,
        "ServerConfig.port",
        click.IntRange(0, 65535),
    ),
    Option(
        "--port-file",
        "ARTIFACTD_PORT_FILE",
        "Write the bound port to this file once serving (for --port 0).",
        _LISTEN,
    ),
    Option(
        "--workers",
        "ARTIFACTD_WORKERS",
        "Server processes sharing the port (SO_REUSEPORT); about one per core. With metrics, "
        "the supervisor serves the sum over the workers on --metrics-port (see "
        "PROMETHEUS_MULTIPROC_DIR).",
        _LISTEN,
        "ServerConfig.workers",
        click.IntRange(1, 256),
    ),
    Option(
        "--max-workers",
        "ARTIFACTD_MAX_WORKERS",
        "Concurrent calls served per process; each running transfer holds one.",
        _LISTEN,
        "ServerConfig.max_workers",
        click.IntRange(1),
    ),
    Option(
        "--grace-period",
        "ARTIFACTD_GRACE_PERIOD",
        "Seconds in-flight transfers get to finish after SIGTERM/SIGINT.",
        _LISTEN,
        "ServerConfig.grace_period",
        click.FloatRange(0),
    ),
    Option(
        "--drain-delay",
        "ARTIFACTD_DRAIN_DELAY",
        "Seconds to report NOT_SERVING after SIGTERM before refusing new calls (lets balancers "
        "move away).",
        _LISTEN,
        "ServerConfig.drain_delay",
        click.FloatRange(0, 600),
    ),
    Option(
        "--reflection/--no-reflection",
        "ARTIFACTD_REFLECTION",
        "Serve gRPC server reflection (for grpcurl and similar tools).",
        _LISTEN,
        "ServerConfig.reflection",
    ),
    # -- storage and backend store
    Option(
        "--artifacts-destination",
        environment.ARTIFACTS_DESTINATION.name,
        "Where artifacts are stored: a local or NFS directory, file:///path, s3://bucket/prefix, "
        "gs://bucket/prefix, wasbs://container@account.blob.core.windows.net/prefix, "
        "ftp://user:password@host/path, sftp://user@host/path, hdfs://namenode:port/path, or a "
        "plugin's scheme.",
        _STORAGE,
        "ServerConfig.artifacts_destination",
    ),
    Option(
        "--extra-artifact-root",
        environment.EXTRA_ARTIFACT_ROOTS.name,
        "Another root experiments may choose as their artifact location (repeatable; the "
        "variable takes a space-separated list). Locations outside all roots are refused.",
        _STORAGE,
        multiple=True,
        param="extra_artifact_roots",
    ),
    Option(
        "--backend-store-uri",
        environment.BACKEND_STORE_URI.name,
        "SQL database for experiments and runs: sqlite:///path, postgresql://user@host/db or "
        "mysql://user@host/db. A new database is migrated on first start.",
        _STORAGE,
        "ServerConfig.backend_store_uri",
    ),
    Option(
        "--backend-store-timeout",
        "ARTIFACTD_BACKEND_STORE_TIMEOUT",
        "Seconds to wait for the backend store: to connect, for a free pooled connection and "
        "(MySQL/MariaDB) for each answer. While the database is down, calls that need it fail "
        "with UNAVAILABLE within this time; artifactd keeps serving and reconnects when it "
        "returns.",
        _STORAGE,
        "ServerConfig.backend_store_timeout",
        click.FloatRange(1, 3600),
    ),
    Option(
        "--fsync/--no-fsync",
        "ARTIFACTD_FSYNC",
        "fsync every file and directory on publish (off: faster, not crash-safe).",
        _STORAGE,
        "ServerConfig.fsync",
    ),
    Option(
        "--direct-io/--no-direct-io",
        "ARTIFACTD_DIRECT_IO",
        "Local storage: write and read large files (8 MiB+) around the page cache (O_DIRECT); "
        "filesystems without O_DIRECT get ordinary I/O either way.",
        _STORAGE,
        "ServerConfig.direct_io",
    ),
    # -- transfers
    Option(
        "--presigned-url-ttl",
        "ARTIFACTD_PRESIGNED_URL_TTL",
        "Seconds a presigned part-upload URL stays valid (clients refresh expired ones).",
        _TRANSFERS,
        "ServerConfig.presigned_url_ttl",
        click.FloatRange(1, 7 * 24 * 3600),
    ),
    Option(
        "--multipart-session-ttl",
        "ARTIFACTD_MULTIPART_SESSION_TTL",
        "Seconds a direct (multipart) or resumable upload may stay unused before it is aborted "
        "with its parts or kept bytes; every use (part URLs, a status query, a stream writing "
        "to it) starts the count again.",
        _TRANSFERS,
        "ServerConfig.multipart_session_ttl",
        click.FloatRange(1),
    ),
    Option(
        "--streamed-upload-ttl",
        "ARTIFACTD_STREAMED_UPLOAD_TTL",
        "Seconds a file streamed through the server may go without receiving bytes before "
        "what storage holds of it (an S3 multipart upload, for files over 8 MiB) is aborted by "
        "the sweeper of any replica: this bounds what a server killed mid-upload leaves "
        "behind. A stream that keeps sending is never swept.",
        _TRANSFERS,
        "ServerConfig.streamed_upload_ttl",
        click.FloatRange(1),
    ),
    Option(
        "--presigned-download-ttl",
        "MLFLOW_PRESIGNED_DOWNLOAD_URL_TTL_SECONDS",
        "Seconds a presigned download URL stays valid.",
        _TRANSFERS,
        "ServerConfig.presigned_download_ttl",
        click.FloatRange(1, 7 * 24 * 3600),
    ),
    # -- TLS
    Option(
        "--tls-cert",
        "ARTIFACTD_TLS_CERT",
        "PEM certificate (chain) to serve TLS with; needs --tls-key. The port then speaks TLS "
        "only.",
        _TLS,
        type=click.Path(dir_okay=False),
        shown_default="plaintext",
    ),
    Option(
        "--tls-key",
        "ARTIFACTD_TLS_KEY",
        "PEM private key of --tls-cert (unencrypted; checked to belong to it at start-up).",
        _TLS,
        type=click.Path(dir_okay=False),
    ),
    Option(
        "--tls-client-ca",
        "ARTIFACTD_TLS_CLIENT_CA",
        "PEM CA bundle: clients must present a certificate it signed (mutual TLS).",
        _TLS,
        type=click.Path(dir_okay=False),
    ),
    # -- authentication
    Option(
        "--auth-tokens-file",
        "ARTIFACTD_AUTH_TOKENS_FILE",
        "TOML file of token digests and certificate names with their roles; turns "
        "authentication on. Reloaded on SIGHUP. `artifactd token create` makes entries.",
        _AUTH,
        type=click.Path(dir_okay=False),
        shown_default="no authentication",
    ),
    Option(
        "--auth-jwks-file",
        "ARTIFACTD_AUTH_JWKS_FILE",
        "JSON Web Key Set (public keys) that bearer JWTs are verified against; turns "
        "authentication on. Reloaded on SIGHUP.",
        _AUTH,
        type=click.Path(dir_okay=False),
    ),
    Option(
        "--auth-jwt-issuer",
        "ARTIFACTD_AUTH_JWT_ISSUER",
        "Required 'iss' of JWTs.",
        _AUTH,
        shown_default="unchecked",
    ),
    Option(
        "--auth-jwt-audience",
        "ARTIFACTD_AUTH_JWT_AUDIENCE",
        "Required 'aud' of JWTs (tokens with an 'aud' are refused when unset).",
        _AUTH,
    ),
    Option(
        "--auth-jwt-roles-claim",
        "ARTIFACTD_AUTH_JWT_ROLES_CLAIM",
        "JWT claim with the caller's roles: a list (or space-separated string) of "
        "'reader', 'writer', 'admin', each optionally ':<experiment id>'.",
        _AUTH,
        "JwtSettings.roles_claim",
    ),
    # -- connections
    Option(
        "--keepalive-time",
        "ARTIFACTD_KEEPALIVE_TIME",
        "Seconds between the server's keepalive pings on an idle connection.",
        _CONNECTIONS,
        "ConnectionSettings.keepalive_time",
        click.FloatRange(1),
    ),
    Option(
        "--keepalive-timeout",
        "ARTIFACTD_KEEPALIVE_TIMEOUT",
        "Seconds to wait for a ping's answer before closing the connection.",
        _CONNECTIONS,
        "ConnectionSettings.keepalive_timeout",
        click.FloatRange(1),
    ),
    Option(
        "--max-connection-idle",
        "ARTIFACTD_MAX_CONNECTION_IDLE",
        "Close connections without calls after this many seconds (clients reconnect).",
        _CONNECTIONS,
        "ConnectionSettings.max_connection_idle",
        click.FloatRange(1),
    ),
    Option(
        "--handshake-timeout",
        "ARTIFACTD_HANDSHAKE_TIMEOUT",
        "Close connections that have not completed their TLS and HTTP/2 handshake after "
        "this many seconds (bare or half-open TCP connections).",
        _CONNECTIONS,
        "ConnectionSettings.handshake_timeout",
        click.FloatRange(0.1),
    ),
    Option(
        "--max-connections",
        "ARTIFACTD_MAX_CONNECTIONS",
        "Connections the process holds at once; more are closed as they arrive (per worker).",
        _CONNECTIONS,
        "ConnectionSettings.max_connections",
        click.IntRange(1),
    ),
    Option(
        "--max-connection-age",
        "ARTIFACTD_MAX_CONNECTION_AGE",
        "Ask clients to reconnect after this many seconds, so an L4 balancer spreads "
        "long-lived connections.",
        _CONNECTIONS,
        type=click.FloatRange(1),
        shown_default="never",
    ),
    Option(
        "--max-connection-age-grace",
        "ARTIFACTD_MAX_CONNECTION_AGE_GRACE",
        "Seconds calls may run on a connection past its max age (keep it longer than your "
        "longest upload).",
        _CONNECTIONS,
        type=click.FloatRange(0),
        shown_default="forever",
    ),
    Option(
        "--max-concurrent-streams",
        "ARTIFACTD_MAX_CONCURRENT_STREAMS",
        "Calls one connection may have open at once (HTTP/2 SETTINGS).",
        _CONNECTIONS,
        "ConnectionSettings.max_concurrent_streams",
        click.IntRange(1),
    ),
    Option(
        "--max-concurrent-rpcs",
        "ARTIFACTD_MAX_CONCURRENT_RPCS",
        "Calls the process accepts at once; more are refused with RESOURCE_EXHAUSTED "
        "(instead of waiting for one of --max-workers).",
        _CONNECTIONS,
        type=click.IntRange(1),
        shown_default="no limit",
    ),
    # -- request limits
    Option(
        "--max-message-size",
        "ARTIFACTD_MAX_MESSAGE_SIZE",
        "Largest gRPC message (bytes) the server receives or sends; a larger one is "
        "RESOURCE_EXHAUSTED. Clients send 1 MiB chunks (GetCapabilities tells them the limit).",
        _LIMITS,
        "RequestLimits.max_message_size",
        click.IntRange(2 * 1024 * 1024, 1024 * 1024 * 1024),
    ),
    Option(
        "--max-path-length",
        "ARTIFACTD_MAX_PATH_LENGTH",
        "Longest artifact path (UTF-8 bytes) a request may name; longer is INVALID_ARGUMENT "
        "(in a LogArtifacts stream, for that file only). At most the protocol's 1024.",
        _LIMITS,
        "RequestLimits.max_path_length",
        click.IntRange(16, 1024),
    ),
    Option(
        "--max-batch-files",
        "ARTIFACTD_MAX_BATCH_FILES",
        "Files one LogArtifacts stream may carry; the ones past it fail with INVALID_ARGUMENT "
        "(the client starts another stream: GetCapabilities tells it the limit).",
        _LIMITS,
        "RequestLimits.max_batch_files",
        click.IntRange(1, 1_000_000),
    ),
    Option(
        "--max-calls-per-principal",
        "ARTIFACTD_MAX_CALLS_PER_PRINCIPAL",
        "With authentication: calls one principal may have in progress at once (per server "
        "process); more are RESOURCE_EXHAUSTED until one ends (cancelled ones included), so "
        "one caller cannot hold every --max-workers thread.",
        _LIMITS,
        type=click.IntRange(1),
        shown_default="no limit",
    ),
    # -- logs and metrics
    Option(
        "--log-level",
        "ARTIFACTD_LOG_LEVEL",
        "Server log level.",
        _OBSERVABILITY,
        "ServerConfig.log_level",
        click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    ),
    Option(
        "--log-format",
        "ARTIFACTD_LOG_FORMAT",
        "Server log lines as text, or as one JSON object per line (every record, the access "
        "log of logger artifactd.access included).",
        _OBSERVABILITY,
        "ServerConfig.log_format",
        click.Choice(["text", "json"], case_sensitive=False),
    ),
    Option(
        "--metrics-port",
        "ARTIFACTD_METRICS_PORT",
        "Serve Prometheus metrics over HTTP on this port, at /metrics (0: any free port).",
        _OBSERVABILITY,
        type=click.IntRange(0, 65535),
        shown_default="no metrics endpoint",
    ),
    Option(
        "--metrics-host",
        "ARTIFACTD_METRICS_HOST",
        "Address the metrics endpoint listens on.",
        _OBSERVABILITY,
        shown_default="the same as --host",
    ),
    Option(
        "--metrics-port-file",
        "ARTIFACTD_METRICS_PORT_FILE",
        "Write the metrics endpoint's bound port to this file once serving (for --metrics-port 0).",
        _OBSERVABILITY,
    ),
    Option(
        "--replica-name",
        "ARTIFACTD_REPLICA_NAME",
        "This replica's name in the metrics: the `replica` label of artifactd_replica_info. "
        "Unique per replica (a pod name).",
        _OBSERVABILITY,
        shown_default="the host name",
    ),
)
"""`artifactd serve`'s options in `--help` order; flags win over their variables."""


# -- environment variables the server reads (besides the options' own) ------------------------

_ALL = "Every network backend"
_S3 = "S3 and S3-compatible storage"
_GCS = "Google Cloud Storage"
_AZURE = "Azure Blob Storage"
_SFTP = "SFTP"
_HDFS = "HDFS"
_METRICS = "Metrics"

STORAGE_TIMEOUT = Variable(
    "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT",
    60.0,
    "Seconds one storage request attempt may take on every network backend (at most three "
    "attempts), so a storage server that stops answering fails the call with UNAVAILABLE in "
    "seconds. Checked at start-up.",
    _ALL,
    mlflow="MLflow honours it on GCS, Azure Blob and ADLS only",
)

S3_ENDPOINT_URL: Variable[str | None] = Variable(
    "MLFLOW_S3_ENDPOINT_URL",
    None,
    "S3-compatible endpoint, only `scheme://host[:port]` (checked at start-up).",
    _S3,
    shown_default="AWS",
    mlflow="same (on an artifactd client it is ignored with a warning)",
)
S3_IGNORE_TLS = Variable(
    "MLFLOW_S3_IGNORE_TLS",
    False,
    "`true`: no TLS verification of the server's S3 calls.",
    _S3,
    mlflow="same",
)
S3_CA_BUNDLE: Variable[str | None] = Variable(
    "AWS_CA_BUNDLE",
    None,
    "CA bundle the S3 endpoint's certificate is checked against.",
    _S3,
)
S3_UPLOAD_EXTRA_ARGS: Variable[str | None] = Variable(
    "MLFLOW_S3_UPLOAD_EXTRA_ARGS",
    None,
    "JSON object of PutObject parameters (e.g. `ServerSideEncryption`), checked at start-up; "
    "with SSE-C (a customer key every part would carry) direct uploads are refused and clients "
    "stream.",
    _S3,
    mlflow="same",
)
S3_ADDRESSING_STYLE = Variable(
    "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE",
    "auto",
    "`auto`, `path` or `virtual`.",
    _S3,
    mlflow="same",
)
S3_SIGNATURE_VERSION = Variable(
    "MLFLOW_EXPERIMENTAL_S3_SIGNATURE_VERSION",
    "s3v4",
    "`s3v4`, or `unsigned` (anonymous requests; no direct transfers).",
    _S3,
    mlflow="same",
)
S3_RETRY_MODE = Variable(
    "AWS_RETRY_MODE",
    "standard",
    "botocore's retry mode: `legacy`, `standard` or `adaptive`.",
    _S3,
)
S3_MAX_ATTEMPTS: Variable[str | None] = Variable(
    "AWS_MAX_ATTEMPTS",
    None,
    "Attempts per S3 request.",
    _S3,
    shown_default="`3` (botocore's)",
)
S3_REGION: Variable[str | None] = Variable(
    "AWS_DEFAULT_REGION",
    None,
    "The region; presigned URLs are signed in the bucket's own region (found with HeadBucket).",
    _S3,
    reader="botocore",
)
S3_CREDENTIALS: Variable[None] = Variable(
    "AWS_ACCESS_KEY_ID",
    None,
    "Credentials, with `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` and the rest of boto3's chain.",
    _S3,
    reader="botocore",
)

GCS_UPLOAD_CHUNK = Variable(
    "MLFLOW_GCS_UPLOAD_CHUNK_SIZE",
    8 * environment.MiB,
    "Bytes per upload chunk, a multiple of 256 KiB; files over one chunk are uploaded as hidden "
    "chunk objects and composed. Checked at start-up.",
    _GCS,
    mlflow="same; MLflow leaves the library's default when unset",
)
GCS_DOWNLOAD_CHUNK = Variable(
    "MLFLOW_GCS_DOWNLOAD_CHUNK_SIZE",
    8 * environment.MiB,
    "Bytes per download request, a multiple of 256 KiB. Checked at start-up.",
    _GCS,
    mlflow="same; MLflow leaves the library's default when unset",
)
GCS_SIGNING_KEY_FILE: Variable[str | None] = Variable(
    "ARTIFACTD_GCS_SIGNING_KEY_FILE",
    None,
    "Service-account key file used only to sign URLs for direct transfers, when the server's "
    "own credentials cannot sign.",
    _GCS,
    shown_default="no direct transfers without signing credentials",
)
GCS_EMULATOR_HOST: Variable[str | None] = Variable(
    "STORAGE_EMULATOR_HOST",
    None,
    "A GCS emulator's `host:port` or URL: anonymous credentials.",
    _GCS,
    mlflow="read by google-cloud-storage (warned about on an artifactd client)",
)
GCS_PROJECT = Variable(
    "GOOGLE_CLOUD_PROJECT",
    "artifactd",
    "With `STORAGE_EMULATOR_HOST`: the project to use (otherwise the credentials' project).",
    _GCS,
)
GCS_CREDENTIALS: Variable[None] = Variable(
    "GOOGLE_APPLICATION_CREDENTIALS",
    None,
    "Application default credentials (a key file); without any credentials, anonymous access.",
    _GCS,
    reader="google-auth",
)

AZURE_CONNECTION_STRING: Variable[str | None] = Variable(
    "AZURE_STORAGE_CONNECTION_STRING",
    None,
    "Connection string; its account must be the destination's. Tried first.",
    _AZURE,
    mlflow="same (warned about on an artifactd client)",
)
AZURE_ACCESS_KEY: Variable[str | None] = Variable(
    "AZURE_STORAGE_ACCESS_KEY",
    None,
    "Account key, tried next; then `DefaultAzureCredential` (extra `azure-identity`). Direct "
    "transfers need an account key (this or the connection string's) to sign.",
    _AZURE,
    mlflow="same",
)

SFTP_IDENTITY_FILE: Variable[str | None] = Variable(
    "ARTIFACTD_SFTP_IDENTITY_FILE",
    None,
    "Private key to log in with; else the `IdentityFile` of the SSH config, else the agent and "
    "default keys (a password in the URI works, with a warning).",
    _SFTP,
)
SFTP_SSH_CONFIG: Variable[str | None] = Variable(
    "ARTIFACTD_SFTP_SSH_CONFIG",
    None,
    "SSH config file for host aliases, ports, users, keys and known-hosts files.",
    _SFTP,
    shown_default="`~/.ssh/config`",
)
SFTP_KNOWN_HOSTS: Variable[str | None] = Variable(
    "ARTIFACTD_SFTP_KNOWN_HOSTS",
    None,
    "known_hosts file checked first; then the config's `UserKnownHostsFile`, "
    "`~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`.",
    _SFTP,
)
SFTP_ACCEPT_NEW_HOST_KEYS = Variable(
    "ARTIFACTD_SFTP_ACCEPT_NEW_HOST_KEYS",
    False,
    "`1`: accept (and remember) the key of a host not yet known; a changed key is always refused.",
    _SFTP,
)

HDFS_TICKET_CACHE: Variable[str | None] = Variable(
    "MLFLOW_KERBEROS_TICKET_CACHE",
    None,
    "Kerberos ticket cache (`kerb_ticket` of pyarrow's HadoopFileSystem).",
    _HDFS,
    mlflow="same",
)
HDFS_USER: Variable[str | None] = Variable(
    "MLFLOW_KERBEROS_USER",
    None,
    "HDFS user (`user`); else the URI's user, else the login user.",
    _HDFS,
    mlflow="same",
)
HDFS_EXTRA_CONF: Variable[str | None] = Variable(
    "MLFLOW_PYARROW_EXTRA_CONF",
    None,
    "`key=value,key=value` Hadoop settings (`extra_conf`), checked at start-up; the storage "
    "timeout becomes `dfs.client.socket-timeout` and `ipc.client.connect.timeout` unless set "
    "here.",
    _HDFS,
    mlflow="same",
)
METRICS_MULTIPROC_DIR: Variable[str | None] = Variable(
    "PROMETHEUS_MULTIPROC_DIR",
    None,
    "With `--workers` N > 1 and metrics on: the directory the workers keep their metrics in "
    "(prometheus_client's multiprocess mode), emptied at start-up. One per replica, on a local "
    "disk (a tmpfs `emptyDir` in Kubernetes), never shared between replicas.",
    _METRICS,
    shown_default="a temporary directory, removed at exit",
)
HDFS_LIBRARY: tuple[Variable[None], ...] = tuple(
    Variable(name, None, help, _HDFS, reader="libhdfs")
    for name, help in (
        ("JAVA_HOME", "The JVM libhdfs runs in."),
        ("ARROW_LIBHDFS_DIR", "Where libhdfs is (else found under `HADOOP_HOME`)."),
        ("HADOOP_HOME", "The Hadoop installation."),
        ("CLASSPATH", "Hadoop's jars (`hadoop classpath --glob`)."),
    )
)

SERVER_VARIABLES: tuple[Variable[Any], ...] = (
    STORAGE_TIMEOUT,
    S3_ENDPOINT_URL,
    S3_IGNORE_TLS,
    S3_CA_BUNDLE,
    S3_UPLOAD_EXTRA_ARGS,
    S3_ADDRESSING_STYLE,
    S3_SIGNATURE_VERSION,
    S3_RETRY_MODE,
    S3_MAX_ATTEMPTS,
    S3_REGION,
    S3_CREDENTIALS,
    GCS_UPLOAD_CHUNK,
    GCS_DOWNLOAD_CHUNK,
    GCS_SIGNING_KEY_FILE,
    GCS_EMULATOR_HOST,
    GCS_PROJECT,
    GCS_CREDENTIALS,
    AZURE_CONNECTION_STRING,
    AZURE_ACCESS_KEY,
    SFTP_IDENTITY_FILE,
    SFTP_SSH_CONFIG,
    SFTP_KNOWN_HOSTS,
    SFTP_ACCEPT_NEW_HOST_KEYS,
    HDFS_TICKET_CACHE,
    HDFS_USER,
    HDFS_EXTRA_CONF,
    *HDFS_LIBRARY,
    METRICS_MULTIPROC_DIR,
)
"""The server's variables besides its options', in the order of the reference."""
