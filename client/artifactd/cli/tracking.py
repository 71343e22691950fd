"""`artifactd experiments ...` and `artifactd runs ...`: the server's experiments and runs.

Options are spelled as in MLflow's CLI (`-n/--experiment-name`, `-x/--experiment-id`,
`--run-id`, `-v/--view`). Output is a table, or with `--json` one JSON object per line; times are
ISO 8601 UTC in tables and milliseconds since the epoch in JSON, as MLflow keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import click

from artifactd.cli.common import friendly_errors, json_option, server_option, table, timestamp
from artifactd.client.tracking import (
    TERMINAL_STATUSES,
    VIEW_TYPES,
    Experiment,
    Run,
    TrackingClient,
)
from artifactd.protocol.errors import NotFound

F = TypeVar("F", bound=Callable[..., Any])

EXPERIMENT_HEADER = ("EXPERIMENT ID", "NAME", "STAGE", "CREATED", "ARTIFACT LOCATION")
RUN_HEADER = ("RUN ID", "EXPERIMENT ID", "NAME", "STATUS", "STAGE", "START", "END", "ARTIFACT URI")


def _view_option(command: F) -> F:
    return click.option(
        "--view",
        "-v",
        type=click.Choice(VIEW_TYPES, case_sensitive=False),
        default="active_only",
        show_default=True,
        help="Which lifecycle stages to list.",
    )(command)


def _experiment_id_option(command: F) -> F:
    return click.option(
        "--experiment-id", "-x", required=True, help="The experiment's id (digits)."
    )(command)


def _run_id_option(command: F) -> F:
    return click.option(
        "--run-id", required=True, help="The run's id (32 lower-case hex characters)."
    )(command)


def _show_experiments(experiments: Sequence[Experiment], as_json: bool) -> None:
    if as_json:
        for experiment in experiments:
            click.echo(json.dumps(asdict(experiment)))
        return
    rows = [
        (
            e.experiment_id,
            e.name,
            e.lifecycle_stage,
            timestamp(e.creation_time),
            e.artifact_location,
        )
        for e in experiments
    ]
    click.echo(table(EXPERIMENT_HEADER, rows))


def _show_runs(runs: Sequence[Run], as_json: bool) -> None:
    if as_json:
        for run in runs:
            click.echo(json.dumps(asdict(run)))
        return
    rows = [
        (
            r.run_id,
            r.experiment_id,
            r.run_name or "-",
            r.status,
            r.lifecycle_stage,
            timestamp(r.start_time),
            timestamp(r.end_time),
            r.artifact_uri,
        )
        for r in runs
    ]
    click.echo(table(RUN_HEADER, rows))


# -- experiments ------------------------------------------------------------------------------


@click.group()
def experiments() -> None:
    """Create, show, list, delete and restore experiments."""


@experiments.command("create")
@click.option("--experiment-name", "-n", required=True, help="A unique name.")
@click.option(
    "--artifact-location",
    "-l",
    default=None,
    help="Where its artifacts go, inside one of the server's artifact roots "
    "(default: <default root>/<experiment id>).",
)
@json_option
@server_option
@friendly_errors
def create_experiment_command(
    experiment_name: str, artifact_location: str | None, as_json: bool, server: str
) -> None:
    """Create an experiment."""
    with TrackingClient(server) as client:
        _show_experiments([client.create_experiment(experiment_name, artifact_location)], as_json)


@experiments.command("get")
@click.option("--experiment-id", "-x", default=None, help="The experiment's id.")
@click.option("--experiment-name", "-n", default=None, help="Or its name.")
@json_option
@server_option
@friendly_errors
def get_experiment_command(
    experiment_id: str | None, experiment_name: str | None, as_json: bool, server: str
) -> None:
    """Show one experiment, by id or by name."""
    if (experiment_id is None) == (experiment_name is None):
        raise click.UsageError("give one of --experiment-id and --experiment-name")
    with TrackingClient(server) as client:
        if experiment_id is not None:
            experiment = client.get_experiment(experiment_id)
        else:
            assert experiment_name is not None
            found = client.get_experiment_by_name(experiment_name)
            if found is None:
                raise NotFound(f"there is no experiment named {experiment_name!r}")
            experiment = found
        _show_experiments([experiment], as_json)


@experiments.command("list")
@_view_option
@json_option
@server_option
@friendly_errors
def list_experiments_command(view: str, as_json: bool, server: str) -> None:
    """List experiments, by id."""
    with TrackingClient(server) as client:
        _show_experiments(client.list_experiments(view), as_json)


@experiments.command("delete")
@_experiment_id_option
@json_option
@server_option
@friendly_errors
def delete_experiment_command(experiment_id: str, as_json: bool, server: str) -> None:
    """Delete an experiment and its runs (restorable until `artifactd gc`)."""
    with TrackingClient(server) as client:
        _show_experiments([client.delete_experiment(experiment_id)], as_json)


@experiments.command("restore")
@_experiment_id_option
@json_option
@server_option
@friendly_errors
def restore_experiment_command(experiment_id: str, as_json: bool, server: str) -> None:
    """Restore a deleted experiment and the runs its deletion deleted."""
    with TrackingClient(server) as client:
        _show_experiments([client.restore_experiment(experiment_id)], as_json)


# -- runs -------------------------------------------------------------------------------------


@click.group()
def runs() -> None:
    """Create, show, list, end, delete and restore runs."""


@runs.command("create")
@_experiment_id_option
@click.option("--run-name", default=None, help="A readable name (need not be unique).")
@json_option
@server_option
@friendly_errors
def create_run_command(
    experiment_id: str, run_name: str | None, as_json: bool, server: str
) -> None:
    """Start a run in an experiment (status RUNNING)."""
    with TrackingClient(server) as client:
        _show_runs([client.create_run(experiment_id, run_name)], as_json)


@runs.command("get")
@_run_id_option
@json_option
@server_option
@friendly_errors
def get_run_command(run_id: str, as_json: bool, server: str) -> None:
    """Show one run."""
    with TrackingClient(server) as client:
        _show_runs([client.get_run(run_id)], as_json)


@runs.command("list")
@click.option(
    "--experiment-id",
    "-x",
    "experiment_ids",
    multiple=True,
    help="Only this experiment's runs (repeatable; default: every experiment).",
)
@_view_option
@json_option
@server_option
@friendly_errors
def list_runs_command(
    experiment_ids: tuple[str, ...], view: str, as_json: bool, server: str
) -> None:
    """List runs, newest first."""
    ids = [part.strip() for text in experiment_ids for part in text.split(",") if part.strip()]
    with TrackingClient(server) as client:
        _show_runs(client.list_runs(ids, view), as_json)


@runs.command("terminate")
@_run_id_option
@click.option(
    "--status",
    type=click.Choice(TERMINAL_STATUSES, case_sensitive=False),
    default="FINISHED",
    show_default=True,
    help="How the run ended.",
)
@json_option
@server_option
@friendly_errors
def terminate_run_command(run_id: str, status: str, as_json: bool, server: str) -> None:
    """End a run now, as FINISHED, FAILED or KILLED."""
    with TrackingClient(server) as client:
        _show_runs([client.set_terminated(run_id, status.upper())], as_json)


@runs.command("delete")
@_run_id_option
@json_option
@server_option
@friendly_errors
def delete_run_command(run_id: str, as_json: bool, server: str) -> None:
    """Delete a run (its artifacts stay readable, and it restorable, until `artifactd gc`)."""
    with TrackingClient(server) as client:
        _show_runs([client.delete_run(run_id)], as_json)


@runs.command("restore")
@_run_id_option
@json_option
@server_option
@friendly_errors
def restore_run_command(run_id: str, as_json: bool, server: str) -> None:
    """Restore a deleted run."""
    with TrackingClient(server) as client:
        _show_runs([client.restore_run(run_id)], as_json)
