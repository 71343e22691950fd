"""`artifactd artifacts ...`: log, download, list and remove artifacts.

User mistakes (a missing file, a bad path, an unreachable server) end with a one-line message
and exit code 1, never a traceback; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from artifactd.client import ArtifactClient, ArtifactInfo
from artifactd.client.settings import SERVER_VARIABLE
from artifactd.client.target import DEFAULT_TARGET, resolve
from artifactd.errors import ArtifactError

F = TypeVar("F", bound=Callable[..., Any])


def _server_option(command: F) -> F:
    return click.option(
        "--server",
        envvar=SERVER_VARIABLE,
        default=DEFAULT_TARGET,
        show_default=True,
        help=f"artifactd server HOST:PORT (env {SERVER_VARIABLE}).",
    )(command)


def _friendly_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ArtifactError as exc:
            click.echo(f"artifactd: error: {exc.message}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(
                f"artifactd: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                err=True,
            )
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("artifactd: interrupted; nothing partial was kept", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _client(server: str, location: str | None) -> tuple[ArtifactClient, str | None]:
    """A client for the server named in `location` (if it is a URI) or by --server."""
    resolved = resolve(location)
    target = resolved.target or server
    return ArtifactClient(target, progress=sys.stderr.isatty()), str(
        resolved.path
    ) if location else None


@click.group()
def artifacts() -> None:
    """Upload, download, list and delete artifacts."""


@artifacts.command("log")
@click.argument("local_path", type=click.Path(exists=True, dir_okay=True, readable=True))
@click.option(
    "--artifact-path", default=None, help="Directory under the artifact root to log into."
)
@click.option("--no-overwrite", is_flag=True, help="Fail instead of replacing existing files.")
@_server_option
@_friendly_errors
def log_command(
    local_path: str, artifact_path: str | None, no_overwrite: bool, server: str
) -> None:
    """Upload a file or a directory tree."""
    client, path = _client(server, artifact_path)
    client.overwrite = not no_overwrite
    with client:
        if os.path.isdir(local_path):
            stored = client.log_artifacts(local_path, path)
            click.echo(f"logged {len(stored)} files ({_size(sum(i.file_size for i in stored))})")
        else:
            info = client.log_artifact(local_path, path)
            click.echo(f"logged {info.path} ({_size(info.file_size)}, sha256 {info.sha256})")


@artifacts.command("download")
@click.argument("artifact_path", default="")
@click.option(
    "--dst",
    "dst",
    default=None,
    help="Local directory to download into (default: a new temporary directory).",
)
@_server_option
@_friendly_errors
def download_command(artifact_path: str, dst: str | None, server: str) -> None:
    """Download a file or directory (the whole root when ARTIFACT_PATH is omitted)."""
    client, path = _client(server, artifact_path)
    with client:
        click.echo(client.download_artifacts(path, dst))


@artifacts.command("list")
@click.argument("path", default="")
@click.option("--recursive", "-r", is_flag=True, help="List the whole subtree.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@_server_option
@_friendly_errors
def list_command(path: str, recursive: bool, as_json: bool, server: str) -> None:
    """List a directory's entries."""
    client, resolved = _client(server, path)
    with client:
        for info in client.iter_artifacts(resolved, recursive=recursive):
            click.echo(_json(info) if as_json else _line(info))


@artifacts.command("rm")
@click.argument("path")
@_server_option
@_friendly_errors
def rm_command(path: str, server: str) -> None:
    """Delete a file or directory tree (succeeds if it is already gone)."""
    client, resolved = _client(server, path)
    with client:
        existed = client.delete_artifacts(resolved or "")
        click.echo(f"deleted {resolved}" if existed else f"{resolved} did not exist")


def _line(info: ArtifactInfo) -> str:
    if info.is_dir:
        return f"{'-':>10}  {info.path}/"
    return f"{_size(info.file_size):>10}  {info.path}"


def _json(info: ArtifactInfo) -> str:
    return json.dumps(
        {
            "path": info.path,
            "is_dir": info.is_dir,
            "file_size": info.file_size,
            "sha256": info.sha256,
            "modified": info.modified.isoformat() if info.modified else None,
        }
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@click.command("health")
@click.option("--service", default="", help="Service to check (default: the whole server).")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait.")
@_server_option
def health_command(service: str, timeout: float, server: str) -> None:
    """Exit 0 if the server reports SERVING (grpc.health.v1), 1 otherwise (for HEALTHCHECK)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            click.echo(f"artifactd: {server}: {exc.code().name}", err=True)
            sys.exit(1)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    click.echo(status)
    sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
