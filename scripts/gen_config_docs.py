"""Writes docs/reference/configuration.md from the settings tables; `--check` fails when stale.

The tables are `artifactd_server.settings` (every `artifactd serve` option and the server's
environment variables) and `artifactd.protocol.environment` (the client distribution's); the
options of `artifactd db upgrade` and the `artifactd` CLI's global options are read from the
click commands themselves. The page is committed (readable without building the site) and
scripts/test.sh runs this with `--check`, so a setting changed in code without regenerating the
page fails CI. Run it with the development venv: `.venv/bin/python scripts/gen_config_docs.py`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import click
import docpage
from docpage import ROOT

from artifactd.cli.main import cli as client_cli
from artifactd.protocol import environment
from artifactd.protocol.environment import Variable, describe_default
from artifactd_server import settings
from artifactd_server.cli import option_default
from artifactd_server.db_cli import db

PAGE = ROOT / "docs" / "reference" / "configuration.md"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no column breaks, no stray HTML tags)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def grouped(items: Iterable[Variable[object]]) -> dict[str, list[Variable[object]]]:
    groups: dict[str, list[Variable[object]]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    return groups


def flags(param: click.Parameter) -> str:
    return " / ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])


def serve_section() -> list[str]:
    lines = [
        "## `artifactd serve`",
        "",
        "Every option has an environment variable; an option given on the command line wins. "
        "`artifactd serve --help` prints the same.",
        "",
    ]
    groups: dict[str, list[settings.Option]] = {}
    for option in settings.SERVE_OPTIONS:
        groups.setdefault(option.group, []).append(option)
    for group, options in groups.items():
        rows = []
        for option in options:
            default = option_default(option)
            shown = (
                describe_default(default)
                if default is not None
                else (option.shown_default or "unset")
            )
            names = " / ".join(f"`{flag}`" for flag in option.flag.split("/"))
            repeat = " (repeatable)" if option.multiple else ""
            rows.append([names + repeat, f"`{option.variable}`", shown, option.help])
        lines += [f"### {group}", "", *table(["option", "environment", "default", "meaning"], rows)]
    return lines


def command_section(title: str, command: click.Command, intro: str) -> list[str]:
    """The command's options as click has them; the environment column is the option's
    `envvar`, or the client variable whose `flag` it is (the root command sets those)."""
    set_by = {v.flag: v.name for v in environment.CLIENT_VARIABLES if v.flag}
    rows = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or "--help" in param.opts:
            continue
        envvar = param.envvar if isinstance(param.envvar, str) else set_by.get(param.opts[0])
        rows.append([flags(param), f"`{envvar}`" if envvar else "", param.help or ""])
    return [f"## {title}", "", intro, "", *table(["option", "environment", "meaning"], rows)]


def variables_section(
    title: str, intro: str, variables: Iterable[Variable[object]], *, with_flag: bool
) -> list[str]:
    lines = [f"## {title}", "", intro, ""]
    for group, items in grouped(variables).items():
        header = ["variable", *(["option"] if with_flag else []), "default", "meaning", "MLflow"]
        rows = []
        for variable in items:
            meaning = variable.help
            if variable.reader:
                meaning += f" Read by {variable.reader} itself; artifactd passes it through."
            rows.append(
                [
                    f"`{variable.name}`",
                    *([f"`{variable.flag}`" if variable.flag else ""] if with_flag else []),
                    variable.documented_default,
                    meaning,
                    variable.mlflow or "",
                ]
            )
        lines += [f"### {group}", "", *table(header, rows)]
    return lines


def mlflow_section() -> list[str]:
    """Every MLflow variable either side reads, in one table: what MLflow users look for."""
    rows = []
    for option in settings.SERVE_OPTIONS:
        if option.variable.startswith("MLFLOW_"):
            rows.append(
                [f"`{option.variable}`", "server", f"`{option.flag}`: {option.help}", "same"]
            )
    for where, variables in (
        ("server", settings.SERVER_VARIABLES),
        ("client", environment.CLIENT_VARIABLES),
    ):
        for variable in variables:
            if variable.name.lstrip("_").startswith("MLFLOW_"):
                rows.append([f"`{variable.name}`", where, variable.help, variable.mlflow or "same"])
    return [
        "## MLflow variables",
        "",
        "The `MLFLOW_` variables above in one table: same name, same meaning as in MLflow "
        "unless the last column says otherwise.",
        "",
        *table(["variable", "read by", "meaning in artifactd", "MLflow"], rows),
    ]


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from artifactd_server.settings and "
        "artifactd.protocol.environment: edit those, then run the script. -->",
        "",
        "Every setting of the server and of the client, generated from the one definition the "
        "code reads them through (`artifactd_server/settings.py` for the server, "
        "`artifactd/protocol/environment.py` for the client distribution). Variables whose "
        "name starts with `MLFLOW_` mean what they mean to MLflow unless the MLflow column "
        "says otherwise; see [MLflow](../mlflow.md) for the ones deliberately not honoured.",
        "",
        *serve_section(),
        *command_section(
            "`artifactd db upgrade`",
            db.commands["upgrade"],
            "Migrates a backend store to this version's schema (back it up first); the server "
            "migrates only a brand-new database itself.",
        ),
        *variables_section(
            "Server environment variables",
            "Read by `artifactd serve` besides its options' own variables: storage "
            "configuration, as MLflow's artifact server reads it. The client never reads "
            "these to decide where artifacts go.",
            settings.SERVER_VARIABLES,
            with_flag=False,
        ),
        *command_section(
            "`artifactd` (client CLI) global options",
            client_cli,
            "Given before the command (`artifactd --tls-ca ca.pem artifacts list`); each sets "
            "the client variable named in it. Every client command also takes `--server` "
            f"(`{environment.SERVER.name}`).",
        ),
        *variables_section(
            "Client environment variables",
            "Read by the client library (`ArtifactClient`, `TrackingClient`), the `artifactd` "
            "CLI and the MLflow plugin alike, when a client is made.",
            environment.CLIENT_VARIABLES,
            with_flag=True,
        ),
        *mlflow_section(),
    ]
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(docpage.main(__file__, PAGE, render))
