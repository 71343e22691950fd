"""`artifactd artifacts ...`: log, download, list and remove artifacts.

Every command takes `--run-id` (the path is then relative to the run's artifact root) and
`runs:/<run_id>/<path>` URIs, and MLflow's option spellings (`--local-file`, `--artifact-path`,
`--artifact-uri`, `--dst-path`) besides its positional arguments. User mistakes end with a
one-line message and exit code 1, never a traceback; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from artifactd.cli.common import friendly_errors, server_option, size
from artifactd.client import ArtifactClient, ArtifactInfo
from artifactd.client.target import Location, in_run, resolve

F = TypeVar("F", bound=Callable[..., Any])


def _run_id_option(command: F) -> F:
    return click.option(
        "--run-id",
        default=None,
        metavar="RUN_ID",
        help="Address this run's artifacts: paths are relative to its artifact root.",
    )(command)


def _client(
    server: str, location: str | None, run_id: str | None = None
) -> tuple[ArtifactClient, Location]:
    """A client for the server named in `location` (if it is a URI) or by --server, and the
    location it names, inside run `run_id` when given."""
    resolved = in_run(resolve(location), run_id)
    return ArtifactClient(resolved.target or server, progress=sys.stderr.isatty()), resolved


def _one_of(*spellings: tuple[str, str | None]) -> str | None:
    """The one value given among (label, value) spellings of one argument; several: usage error."""
    present = [(label, value) for label, value in spellings if value is not None]
    if len(present) > 1:
        labels = " and ".join(label for label, _ in present)
        raise click.UsageError(f"{labels} name the same thing; give one of them")
    return present[0][1] if present else None


@click.group()
def artifacts() -> None:
    """Upload, download, list and delete artifacts (of the server, or of a run)."""


@artifacts.command("log")
@click.argument(
    "local_path", required=False, type=click.Path(exists=True, dir_okay=True, readable=True)
)
@click.option(
    "--local-file",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    default=None,
    help="File to log (instead of LOCAL_PATH).",
)
@click.option(
    "--local-dir",
    type=click.Path(exists=True, file_okay=False, readable=True),
    default=None,
    help="Directory tree to log (instead of LOCAL_PATH).",
)
@click.option(
    "--artifact-path",
    default=None,
    help="Directory to log into: a path, artifactd:// or runs:/<run_id>/<path> URI.",
)
@_run_id_option
@click.option("--no-overwrite", is_flag=True, help="Fail instead of replacing existing files.")
@server_option
@friendly_errors
def log_command(
    local_path: str | None,
    local_file: str | None,
    local_dir: str | None,
    artifact_path: str | None,
    run_id: str | None,
    no_overwrite: bool,
    server: str,
) -> None:
    """Upload a file or a directory tree."""
    source = _one_of(
        ("LOCAL_PATH", local_path), ("--local-file", local_file), ("--local-dir", local_dir)
    )
    if source is None:
        raise click.UsageError("give the file or directory to log: LOCAL_PATH or --local-file")
    client, location = _client(server, artifact_path, run_id)
    client.overwrite = not no_overwrite
    with client:
        path, run = str(location.path), location.run_id
        if os.path.isdir(source):
            stored = client.log_artifacts(source, path, run_id=run)
            where = f" to {location}" if run else ""
            click.echo(
                f"logged {len(stored)} files{where} ({size(sum(i.file_size for i in stored))})"
            )
        else:
            info = client.log_artifact(source, path, run_id=run)
            shown = f"runs:/{run}/{info.path}" if run else info.path
            click.echo(f"logged {shown} ({size(info.file_size)}, sha256 {info.sha256})")


@artifacts.command("download")
@click.argument("artifact_path_argument", metavar="[ARTIFACT_PATH]", required=False)
@click.option("--artifact-path", default=None, help="What to download (instead of ARTIFACT_PATH).")
@click.option(
    "--artifact-uri", default=None, help="artifactd:// or runs:/ URI of what to download."
)
@_run_id_option
@click.option(
    "--dst",
    "--dst-path",
    "dst",
    default=None,
    help="Local directory to download into (default: a new temporary directory).",
)
@server_option
@friendly_errors
def download_command(
    artifact_path_argument: str | None,
    artifact_path: str | None,
    artifact_uri: str | None,
    run_id: str | None,
    dst: str | None,
    server: str,
) -> None:
    """Download a file or directory (the whole root when ARTIFACT_PATH is omitted)."""
    given = _one_of(
        ("ARTIFACT_PATH", artifact_path_argument),
        ("--artifact-path", artifact_path),
        ("--artifact-uri", artifact_uri),
    )
    client, location = _client(server, given or "", run_id)
    with client:
        click.echo(client.download_artifacts(str(location.path), dst, run_id=location.run_id))


@artifacts.command("list")
@click.argument("path", required=False)
@click.option("--artifact-path", default=None, help="Directory to list (instead of PATH).")
@_run_id_option
@click.option("--recursive", "-r", is_flag=True, help="List the whole subtree.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@server_option
@friendly_errors
def list_command(
    path: str | None,
    artifact_path: str | None,
    run_id: str | None,
    recursive: bool,
    as_json: bool,
    server: str,
) -> None:
    """List a directory's entries (paths relative to the run's root with --run-id)."""
    given = _one_of(("PATH", path), ("--artifact-path", artifact_path))
    client, location = _client(server, given or "", run_id)
    with client:
        entries = client.iter_artifacts(
            str(location.path), recursive=recursive, run_id=location.run_id
        )
        for info in entries:
            click.echo(_json(info) if as_json else _line(info))


@artifacts.command("rm")
@click.argument("path", required=False)
@click.option("--artifact-path", default=None, help="What to delete (instead of PATH).")
@_run_id_option
@server_option
@friendly_errors
def rm_command(
    path: str | None, artifact_path: str | None, run_id: str | None, server: str
) -> None:
    """Delete a file or directory tree (succeeds if it is already gone).

    `runs:/<run_id>` (or an empty PATH with --run-id) deletes all of a run's artifacts.
    """
    given = _one_of(("PATH", path), ("--artifact-path", artifact_path))
    if given is None:
        raise click.UsageError("give the artifact path to delete: PATH or --artifact-path")
    client, location = _client(server, given, run_id)
    with client:
        existed = client.delete_artifacts(str(location.path), run_id=location.run_id)
        click.echo(f"deleted {location}" if existed else f"{location} did not exist")


def _line(info: ArtifactInfo) -> str:
    if info.is_dir:
        return f"{'-':>10}  {info.path}/"
    return f"{size(info.file_size):>10}  {info.path}"


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


@click.command("health")
@click.option("--service", default="", help="Service to check (default: the whole server).")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait.")
@server_option
def health_command(service: str, timeout: float, server: str) -> None:
    """Exit 0 if the server reports SERVING (grpc.health.v1), 1 otherwise (for HEALTHCHECK)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from artifactd.client.rpc import open_channel
    from artifactd.client.settings import ClientSettings

    with open_channel(server, ClientSettings.from_env()) as channel:
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
