"""`artifactd serve`: flags (each with an ARTIFACTD_* environment variable) into a ServerConfig."""

from __future__ import annotations

import sys

import click

from artifactd.protocol import defaults
from artifactd.protocol.errors import ArtifactError
from artifactd_server.app import ServerConfig
from artifactd_server.auth.authenticator import AuthSettings
from artifactd_server.auth.jwt_verifier import JwtSettings
from artifactd_server.domain.limits import ConnectionSettings
from artifactd_server.observability.logs import configure_logging
from artifactd_server.workers import run as run_server

_DEFAULTS = ServerConfig()
_CONNECTIONS = ConnectionSettings()


@click.command("serve")
@click.option(
    "--host",
    envvar="ARTIFACTD_HOST",
    default=_DEFAULTS.host,
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="ARTIFACTD_PORT",
    type=click.IntRange(0, 65535),
    default=_DEFAULTS.port,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--artifacts-destination",
    envvar=defaults.ARTIFACTS_DESTINATION_VARIABLE,
    default=_DEFAULTS.artifacts_destination,
    show_default=True,
    help="Where artifacts are stored: a local or NFS directory, file:///path, or s3://bucket/prefix.",
)
@click.option(
    "--extra-artifact-root",
    "extra_artifact_roots",
    envvar=defaults.EXTRA_ROOTS_VARIABLE,
    multiple=True,
    help="Another root experiments may choose as their artifact location (repeatable; the "
    "variable takes a space-separated list). Locations outside all roots are refused.",
)
@click.option(
    "--backend-store-uri",
    envvar=defaults.BACKEND_STORE_VARIABLE,
    default=_DEFAULTS.backend_store_uri,
    show_default=True,
    help="SQL database for experiments and runs: sqlite:///path, postgresql://user@host/db or "
    "mysql://user@host/db. A new database is migrated on first start.",
)
@click.option(
    "--grace-period",
    envvar="ARTIFACTD_GRACE_PERIOD",
    type=click.FloatRange(0),
    default=_DEFAULTS.grace_period,
    show_default=True,
    help="Seconds in-flight transfers get to finish after SIGTERM/SIGINT.",
)
@click.option(
    "--max-workers",
    envvar="ARTIFACTD_MAX_WORKERS",
    type=click.IntRange(1),
    default=_DEFAULTS.max_workers,
    show_default=True,
    help="Concurrent calls served; each running transfer holds one.",
)
@click.option(
    "--reflection/--no-reflection",
    envvar="ARTIFACTD_REFLECTION",
    default=_DEFAULTS.reflection,
    show_default=True,
    help="Serve gRPC server reflection (for grpcurl and similar tools).",
)
@click.option(
    "--fsync/--no-fsync",
    envvar="ARTIFACTD_FSYNC",
    default=_DEFAULTS.fsync,
    show_default=True,
    help="fsync every file and directory on publish (off: faster, not crash-safe).",
)
@click.option(
    "--direct-io/--no-direct-io",
    envvar="ARTIFACTD_DIRECT_IO",
    default=_DEFAULTS.direct_io,
    show_default=True,
    help="Local storage: write and read large files (8 MiB+) around the page cache (O_DIRECT).",
)
@click.option(
    "--port-file",
    envvar="ARTIFACTD_PORT_FILE",
    default=None,
    help="Write the bound port to this file once serving (for --port 0).",
)
@click.option(
    "--presigned-url-ttl",
    envvar="ARTIFACTD_PRESIGNED_URL_TTL",
    type=click.FloatRange(1, 7 * 24 * 3600),
    default=_DEFAULTS.presigned_url_ttl,
    show_default=True,
    help="Seconds a presigned part-upload URL stays valid (clients refresh expired ones).",
)
@click.option(
    "--multipart-session-ttl",
    envvar="ARTIFACTD_MULTIPART_SESSION_TTL",
    type=click.FloatRange(1),
    default=_DEFAULTS.multipart_session_ttl,
    show_default=True,
    help="Seconds a direct (multipart) upload may stay open before it is aborted.",
)
@click.option(
    "--presigned-download-ttl",
    envvar="MLFLOW_PRESIGNED_DOWNLOAD_URL_TTL_SECONDS",
    type=click.FloatRange(1, 7 * 24 * 3600),
    default=_DEFAULTS.presigned_download_ttl,
    show_default=True,
    help="Seconds a presigned download URL stays valid.",
)
@click.option(
    "--tls-cert",
    envvar="ARTIFACTD_TLS_CERT",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM certificate (chain) to serve TLS with; needs --tls-key.",
)
@click.option(
    "--tls-key",
    envvar="ARTIFACTD_TLS_KEY",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM private key of --tls-cert (unencrypted).",
)
@click.option(
    "--tls-client-ca",
    envvar="ARTIFACTD_TLS_CLIENT_CA",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM CA bundle: clients must present a certificate it signed (mutual TLS).",
)
@click.option(
    "--auth-tokens-file",
    envvar="ARTIFACTD_AUTH_TOKENS_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of token digests and certificate names with their roles; turns "
    "authentication on. Reloaded on SIGHUP. `artifactd token create` makes entries.",
)
@click.option(
    "--auth-jwks-file",
    envvar="ARTIFACTD_AUTH_JWKS_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON Web Key Set (public keys) that bearer JWTs are verified against; turns "
    "authentication on. Reloaded on SIGHUP.",
)
@click.option(
    "--auth-jwt-issuer",
    envvar="ARTIFACTD_AUTH_JWT_ISSUER",
    default=None,
    help="Required 'iss' of JWTs (unchecked when unset).",
)
@click.option(
    "--auth-jwt-audience",
    envvar="ARTIFACTD_AUTH_JWT_AUDIENCE",
    default=None,
    help="Required 'aud' of JWTs (tokens with an 'aud' are refused when unset).",
)
@click.option(
    "--auth-jwt-roles-claim",
    envvar="ARTIFACTD_AUTH_JWT_ROLES_CLAIM",
    default="roles",
    show_default=True,
    help="JWT claim with the caller's roles: a list (or space-separated string) of "
    "'reader', 'writer', 'admin', each optionally ':<experiment id>'.",
)
@click.option(
    "--workers",
    envvar="ARTIFACTD_WORKERS",
    type=click.IntRange(1, 256),
    default=_DEFAULTS.workers,
    show_default=True,
    help="Server processes sharing the port (SO_REUSEPORT); about one per core.",
)
@click.option(
    "--drain-delay",
    envvar="ARTIFACTD_DRAIN_DELAY",
    type=click.FloatRange(0, 600),
    default=_DEFAULTS.drain_delay,
    show_default=True,
    help="Seconds to report NOT_SERVING after SIGTERM before refusing new calls.",
)
@click.option(
    "--keepalive-time",
    envvar="ARTIFACTD_KEEPALIVE_TIME",
    type=click.FloatRange(1),
    default=_CONNECTIONS.keepalive_time,
    show_default=True,
    help="Seconds between the server's keepalive pings on an idle connection.",
)
@click.option(
    "--keepalive-timeout",
    envvar="ARTIFACTD_KEEPALIVE_TIMEOUT",
    type=click.FloatRange(1),
    default=_CONNECTIONS.keepalive_timeout,
    show_default=True,
    help="Seconds to wait for a ping's answer before closing the connection.",
)
@click.option(
    "--max-connection-idle",
    envvar="ARTIFACTD_MAX_CONNECTION_IDLE",
    type=click.FloatRange(1),
    default=_CONNECTIONS.max_connection_idle,
    show_default=True,
    help="Close connections without calls after this many seconds (clients reconnect).",
)
@click.option(
    "--handshake-timeout",
    envvar="ARTIFACTD_HANDSHAKE_TIMEOUT",
    type=click.FloatRange(0.1),
    default=_CONNECTIONS.handshake_timeout,
    show_default=True,
    help="Close connections that have not completed their TLS and HTTP/2 handshake after "
    "this many seconds (bare or half-open TCP connections).",
)
@click.option(
    "--max-connections",
    envvar="ARTIFACTD_MAX_CONNECTIONS",
    type=click.IntRange(1),
    default=_CONNECTIONS.max_connections,
    show_default=True,
    help="Connections the process holds at once; more are closed as they arrive (per worker).",
)
@click.option(
    "--max-connection-age",
    envvar="ARTIFACTD_MAX_CONNECTION_AGE",
    type=click.FloatRange(1),
    default=None,
    help="Ask clients to reconnect after this many seconds, so an L4 balancer spreads "
    "long-lived connections (default: never).",
)
@click.option(
    "--max-connection-age-grace",
    envvar="ARTIFACTD_MAX_CONNECTION_AGE_GRACE",
    type=click.FloatRange(0),
    default=None,
    help="Seconds calls may run on a connection past its max age (default: forever; keep it "
    "longer than your longest upload).",
)
@click.option(
    "--max-concurrent-streams",
    envvar="ARTIFACTD_MAX_CONCURRENT_STREAMS",
    type=click.IntRange(1),
    default=_CONNECTIONS.max_concurrent_streams,
    show_default=True,
    help="Calls one connection may have open at once (HTTP/2 SETTINGS).",
)
@click.option(
    "--max-concurrent-rpcs",
    envvar="ARTIFACTD_MAX_CONCURRENT_RPCS",
    type=click.IntRange(1),
    default=None,
    help="Calls the process accepts at once; more are refused with RESOURCE_EXHAUSTED "
    "(default: no limit; they wait for one of --max-workers).",
)
@click.option(
    "--log-level",
    envvar="ARTIFACTD_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--metrics-port",
    envvar="ARTIFACTD_METRICS_PORT",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics over HTTP on this port, at /metrics (0: any free port; "
    "unset: no metrics endpoint).",
)
@click.option(
    "--metrics-host",
    envvar="ARTIFACTD_METRICS_HOST",
    default=None,
    help="Address the metrics endpoint listens on  [default: the same as --host]",
)
@click.option(
    "--metrics-port-file",
    envvar="ARTIFACTD_METRICS_PORT_FILE",
    default=None,
    help="Write the metrics endpoint's bound port to this file once serving (for "
    "--metrics-port 0).",
)
@click.option(
    "--log-format",
    envvar="ARTIFACTD_LOG_FORMAT",
    default=_DEFAULTS.log_format,
    show_default=True,
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="Server log lines as text, or as one JSON object per line (every record, the access "
    "log of logger artifactd.access included).",
)
def serve_command(
    host: str,
    port: int,
    artifacts_destination: str,
    extra_artifact_roots: tuple[str, ...],
    backend_store_uri: str,
    grace_period: float,
    max_workers: int,
    reflection: bool,
    fsync: bool,
    direct_io: bool,
    port_file: str | None,
    presigned_url_ttl: float,
    multipart_session_ttl: float,
    presigned_download_ttl: float,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    auth_tokens_file: str | None,
    auth_jwks_file: str | None,
    auth_jwt_issuer: str | None,
    auth_jwt_audience: str | None,
    auth_jwt_roles_claim: str,
    workers: int,
    drain_delay: float,
    keepalive_time: float,
    keepalive_timeout: float,
    max_connection_idle: float,
    handshake_timeout: float,
    max_connections: int,
    max_connection_age: float | None,
    max_connection_age_grace: float | None,
    max_concurrent_streams: int,
    max_concurrent_rpcs: int | None,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str | None,
    metrics_port_file: str | None,
    log_format: str,
) -> None:
    """Serve the artifact API over gRPC."""
    configure_logging(log_level, log_format.lower())
    config = ServerConfig(
        host=host,
        port=port,
        artifacts_destination=artifacts_destination,
        extra_artifact_roots=extra_artifact_roots,
        backend_store_uri=backend_store_uri,
        grace_period=grace_period,
        max_workers=max_workers,
        reflection=reflection,
        fsync=fsync,
        direct_io=direct_io,
        port_file=port_file,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_port_file=metrics_port_file,
        log_format=log_format.lower(),
        log_level=log_level.upper(),
        workers=workers,
        drain_delay=drain_delay,
        connections=ConnectionSettings(
            keepalive_time=keepalive_time,
            keepalive_timeout=keepalive_timeout,
            max_connection_idle=max_connection_idle,
            handshake_timeout=handshake_timeout,
            max_connections=max_connections,
            max_connection_age=max_connection_age,
            max_connection_age_grace=max_connection_age_grace,
            max_concurrent_streams=max_concurrent_streams,
            max_concurrent_rpcs=max_concurrent_rpcs,
        ),
        presigned_url_ttl=presigned_url_ttl,
        multipart_session_ttl=multipart_session_ttl,
        presigned_download_ttl=presigned_download_ttl,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        auth=AuthSettings(
            tokens_file=auth_tokens_file,
            jwt=(
                JwtSettings(
                    auth_jwks_file, auth_jwt_issuer, auth_jwt_audience, auth_jwt_roles_claim
                )
                if auth_jwks_file
                else None
            ),
        ),
    )
    try:
        code = run_server(config)
    except (ArtifactError, OSError) as exc:
        click.echo(f"artifactd: cannot serve: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)
