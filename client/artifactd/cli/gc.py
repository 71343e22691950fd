"""`artifactd gc`: remove the artifacts, then the records, of deleted runs and experiments.

Through a server (`--server HOST:PORT`, its CollectGarbage RPC) or directly on the backend store
and the artifact roots (`--backend-store-uri`, `--artifacts-destination`), like `mlflow gc`.
Either way one line per run or experiment handled, then a summary; exit code 1 when anything
failed (its record is kept, so running gc again retries it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from artifactd.cli.common import fail, friendly_errors, json_option
from artifactd.client.tracking import GarbageEvent, GarbageSummary, TrackingClient, garbage_item
from artifactd.protocol.durations import FORMAT_HELP, parse_duration
from artifactd.protocol.environment import (
    ARTIFACTS_DESTINATION,
    BACKEND_STORE_URI,
    EXTRA_ARTIFACT_ROOTS,
    SERVER,
)
from artifactd.protocol.errors import ArtifactError
from artifactd.protocol.ids import check_run_id

if TYPE_CHECKING:
    from artifactd.v1 import run_service_pb2 as rpb


_OUTCOME_TEXT = {
    "collected": "collected",
    "would_collect": "would collect",
    "skipped": "skipped",
    "failed": "FAILED",
}


def _older_than(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ArtifactError as exc:
        raise click.BadParameter(exc.message) from None


def _run_ids(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str]:
    ids = _split(value)
    try:
        return [check_run_id(run_id) for run_id in ids]
    except ArtifactError as exc:
        raise click.BadParameter(exc.message) from None


def _experiment_ids(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str]:
    ids = _split(value)
    for experiment_id in ids:
        if not (experiment_id.isascii() and experiment_id.isdigit()):
            raise click.BadParameter(
                f"{experiment_id!r} is not an experiment id (experiment ids are digits)"
            )
    return ids


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@click.command("gc")
@click.option(
    "--older-than",
    callback=_older_than,
    default=None,
    metavar="DURATION",
    help=f"Only runs deleted at least this long ago: {FORMAT_HELP}. Default: every deleted run.",
)
@click.option(
    "--run-ids",
    callback=_run_ids,
    default=None,
    metavar="ID,ID,...",
    help="Only these deleted runs (comma-separated).",
)
@click.option(
    "--experiment-ids",
    callback=_experiment_ids,
    default=None,
    metavar="ID,ID,...",
    help="Only these deleted experiments, with all their runs (comma-separated).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be collected; delete nothing.")
@click.option(
    "--server",
    envvar=SERVER.name,
    default=None,
    metavar="HOST:PORT",
    help=f"Collect through this artifactd server (env {SERVER.name}). Without it, gc works "
    "directly on --backend-store-uri and --artifacts-destination.",
)
@click.option(
    "--backend-store-uri",
    envvar=BACKEND_STORE_URI.name,
    default=BACKEND_STORE_URI.default,
    show_default=True,
    help=f"Without --server: the backend store database (env {BACKEND_STORE_URI.name}).",
)
@click.option(
    "--artifacts-destination",
    envvar=ARTIFACTS_DESTINATION.name,
    default=ARTIFACTS_DESTINATION.default,
    show_default=True,
    help="Without --server: the server's artifacts destination, as given to `artifactd serve` "
    f"(env {ARTIFACTS_DESTINATION.name}).",
)
@click.option(
    "--extra-artifact-root",
    "extra_artifact_roots",
    envvar=EXTRA_ARTIFACT_ROOTS.name,
    multiple=True,
    help="Without --server: another artifact root of the server, as given to `artifactd "
    f"serve` (repeatable; env {EXTRA_ARTIFACT_ROOTS.name}, space-separated).",
)
@json_option
@click.pass_context
@friendly_errors
def gc_command(
    ctx: click.Context,
    older_than: float | None,
    run_ids: list[str],
    experiment_ids: list[str],
    dry_run: bool,
    server: str | None,
    backend_store_uri: str,
    artifacts_destination: str,
    extra_artifact_roots: tuple[str, ...],
    as_json: bool,
) -> None:
    """Permanently remove deleted runs and experiments: artifacts first, then records.

    A run is collected once it is deleted (and, with --older-than, deleted long enough ago); an
    experiment once it is deleted and has no runs left. Restoring is no longer possible after.
    With --server (or ARTIFACTD_SERVER set, and no store flags given) the server collects;
    otherwise gc opens the backend store and artifact roots itself, like `mlflow gc`.
    """
    direct_flags = [
        name
        for name, param in (
            ("--backend-store-uri", "backend_store_uri"),
            ("--artifacts-destination", "artifacts_destination"),
            ("--extra-artifact-root", "extra_artifact_roots"),
        )
        if ctx.get_parameter_source(param) == ParameterSource.COMMANDLINE
    ]
    server_source = ctx.get_parameter_source("server")
    if server is not None and server_source == ParameterSource.COMMANDLINE and direct_flags:
        raise click.UsageError(
            f"--server collects through a server, {' and '.join(direct_flags)} without one; "
            "give one or the other"
        )
    if server is not None and not direct_flags:
        items = _through_server(server, older_than, run_ids, experiment_ids, dry_run)
    else:
        roots = [artifacts_destination, *extra_artifact_roots]
        items = _direct(backend_store_uri, roots, older_than, run_ids, experiment_ids, dry_run)
    summary = _report(items, as_json)
    if summary.failed:
        fail(
            f"{summary.failed} of the runs and experiments could not be collected (see above); "
            "their records are kept, so running gc again retries them"
        )


def _through_server(
    server: str,
    older_than: float | None,
    run_ids: list[str],
    experiment_ids: list[str],
    dry_run: bool,
) -> Iterator[GarbageEvent | GarbageSummary]:
    with TrackingClient(server) as client:
        yield from client.collect_garbage(
            older_than=older_than, run_ids=run_ids, experiment_ids=experiment_ids, dry_run=dry_run
        )


def _direct(
    backend_store_uri: str,
    roots: list[str],
    older_than: float | None,
    run_ids: list[str],
    experiment_ids: list[str],
    dry_run: bool,
) -> Iterator[GarbageEvent | GarbageSummary]:
    # The server distribution registers its collector; the client never imports server code.
    collectors = list(entry_points(group="artifactd.collectors", name="direct"))
    if not collectors:
        fail(
            "gc without --server works on the database and storage directly, which needs the "
            "server: pip install artifactd-server (with the extras of your destination and "
            "database); or pass --server HOST:PORT"
        )
    run_garbage_collection = collectors[0].load()
    messages: Iterable[rpb.CollectGarbageResponse] = run_garbage_collection(
        backend_store_uri,
        roots,
        older_than=older_than,
        run_ids=run_ids,
        experiment_ids=experiment_ids,
        dry_run=dry_run,
    )
    for message in messages:
        yield garbage_item(message)


def _report(items: Iterable[GarbageEvent | GarbageSummary], as_json: bool) -> GarbageSummary:
    summary: GarbageSummary | None = None
    for item in items:
        if as_json:
            kind = "summary" if isinstance(item, GarbageSummary) else "event"
            click.echo(json.dumps({"type": kind, **asdict(item)}))
        else:
            click.echo(_summary_line(item) if isinstance(item, GarbageSummary) else _line(item))
        if isinstance(item, GarbageSummary):
            summary = item
    if summary is None:
        fail("garbage collection ended without a summary; it may not have finished")
    return summary


def _line(event: GarbageEvent) -> str:
    outcome = _OUTCOME_TEXT.get(event.outcome, event.outcome)
    line = f"{outcome} {event.kind} {event.id}"
    if event.artifact_uri:
        line += f" ({event.artifact_uri})"
    if event.message:
        line += f": {event.message}"
    return line


def _summary_line(summary: GarbageSummary) -> str:
    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    done = (
        f"{count(summary.runs_collected, 'run')} and "
        f"{count(summary.experiments_collected, 'experiment')}"
    )
    head = f"dry run: would collect {done}" if summary.dry_run else f"collected {done}"
    return f"{head}; {summary.skipped} skipped, {summary.failed} failed"
