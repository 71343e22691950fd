"""`artifactd serve`: its options, built from `settings.SERVE_OPTIONS`, into a ServerConfig.

Each option's default is read from the dataclass field the table names (`ServerConfig.port`,
...), so the value `--help` and the configuration reference show is the one the server uses
when it is constructed without the option, e.g. in tests.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from artifactd.protocol.errors import ArtifactError
from artifactd_server.app import ServerConfig
from artifactd_server.auth.authenticator import AuthSettings
from artifactd_server.auth.jwt_verifier import JwtSettings
from artifactd_server.domain.limits import ConnectionSettings, RequestLimits
from artifactd_server.observability.logs import configure_logging
from artifactd_server.settings import SERVE_OPTIONS, Option
from artifactd_server.workers import run as run_server

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULT_SOURCES: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (ServerConfig, ConnectionSettings, RequestLimits, JwtSettings)
}


def option_default(option: Option) -> Any:
    """The option's default: the default of the dataclass field it names (None when none)."""
    if option.default_of is None:
        return None
    class_name, _, field_name = option.default_of.partition(".")
    fields = {f.name: f for f in dataclasses.fields(_DEFAULT_SOURCES[class_name])}
    field = fields[field_name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def serve_options(command: F) -> F:
    """Applies every option of `SERVE_OPTIONS` to `command`, the first one on top in `--help`."""
    for option in reversed(SERVE_OPTIONS):
        default = option_default(option)
        # a repeatable option keeps click's own default (an empty tuple)
        value: dict[str, Any] = {"multiple": True} if option.multiple else {"default": default}
        command = click.option(
            option.flag,
            option.name,
            envvar=option.variable,
            type=option.type,
            show_default=True if default is not None else option.shown_default,
            show_envvar=True,
            help=option.help,
            **value,
        )(command)
    return command


@click.command("serve")
@serve_options
def serve_command(
    host: str,
    port: int,
    artifacts_destination: str,
    extra_artifact_roots: tuple[str, ...],
    backend_store_uri: str,
    backend_store_timeout: float,
    grace_period: float,
    max_workers: int,
    reflection: bool,
    fsync: bool,
    direct_io: bool,
    port_file: str | None,
    presigned_url_ttl: float,
    multipart_session_ttl: float,
    streamed_upload_ttl: float,
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
    max_message_size: int,
    max_path_length: int,
    max_batch_files: int,
    max_calls_per_principal: int | None,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str | None,
    metrics_port_file: str | None,
    replica_name: str | None,
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
        backend_store_timeout=backend_store_timeout,
        grace_period=grace_period,
        max_workers=max_workers,
        reflection=reflection,
        fsync=fsync,
        direct_io=direct_io,
        port_file=port_file,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_port_file=metrics_port_file,
        replica_name=replica_name,
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
        request_limits=RequestLimits(
            max_message_size=max_message_size,
            max_path_length=max_path_length,
            max_batch_files=max_batch_files,
            max_calls_per_principal=max_calls_per_principal,
        ),
        presigned_url_ttl=presigned_url_ttl,
        multipart_session_ttl=multipart_session_ttl,
        streamed_upload_ttl=streamed_upload_ttl,
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
