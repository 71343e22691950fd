"""`artifactd`: the root command.

Every subcommand is imported only when it runs, and `--help` lists them from the table below
without importing any, so a command pays only for its own imports (`artifactd --help` imports
neither grpc nor the server). `serve` and `db` belong to the server distribution,
`artifactd-server`, which registers them in the `artifactd.commands` entry-point group; with
only this client installed they exit 1 naming the distribution to install.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

import click

from artifactd.protocol.environment import CLIENT_CERT, CLIENT_KEY, TLS, TLS_CA, TOKEN, TOKEN_FILE

SERVER_COMMANDS_GROUP = "artifactd.commands"
SERVER_DISTRIBUTION = "artifactd-server"

# name -> (module, attribute, one-line help shown by `artifactd --help`)
_CLIENT_COMMANDS = {
    "artifacts": (
        "artifactd.cli.artifacts",
        "artifacts",
        "Log, list, download and delete artifacts.",
    ),
    "experiments": (
        "artifactd.cli.tracking",
        "experiments",
        "Create, list and delete experiments.",
    ),
    "runs": ("artifactd.cli.tracking", "runs", "Create, list, end and delete runs."),
    "gc": ("artifactd.cli.gc", "gc_command", "Permanently remove deleted runs and experiments."),
    "health": ("artifactd.cli.artifacts", "health_command", "Check that a server is serving."),
    "token": ("artifactd.cli.token", "token_group", "Bearer tokens for --auth-tokens-file."),
}
_SERVER_COMMANDS = {
    "serve": "Run the artifactd server (needs artifactd-server).",
    "db": "Manage the backend store database (needs artifactd-server).",
}


def _server_command(name: str) -> click.Command:
    """The server distribution's command `name`, or one that says how to get it."""
    from importlib.metadata import entry_points  # 25 ms: only when a server command is asked for

    for ep in entry_points(group=SERVER_COMMANDS_GROUP, name=name):
        command: click.Command = ep.load()
        return command

    @click.command(name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args: tuple[str, ...]) -> None:
        click.echo(
            f"artifactd: error: `artifactd {name}` is part of the server: "
            f"pip install {SERVER_DISTRIBUTION} (this is only the client, `artifactd`)",
            err=True,
        )
        sys.exit(1)

    return missing


class _Root(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _CLIENT_COMMANDS:
            module, name, _ = _CLIENT_COMMANDS[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        if cmd_name in _SERVER_COMMANDS:
            return _server_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_CLIENT_COMMANDS, *_SERVER_COMMANDS])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table: importing every command to read its help would
        cost the start-up this module avoids."""
        helps = {name: entry[2] for name, entry in _CLIENT_COMMANDS.items()} | _SERVER_COMMANDS
        with formatter.section("Commands"):
            formatter.write_dl(sorted(helps.items()))


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="artifactd")
@click.option("--tls", is_flag=True, default=None, help=f"Connect with TLS ({TLS.name}=1).")
@click.option(
    "--tls-ca", metavar="PEM", default=None,
    help=f"CA bundle the server's certificate is checked against ({TLS_CA.name}).",
)  # fmt: skip
@click.option(
    "--client-cert", metavar="PEM", default=None,
    help=f"Client certificate for mutual TLS ({CLIENT_CERT.name}).",
)  # fmt: skip
@click.option(
    "--client-key", metavar="PEM", default=None,
    help=f"Key of --client-cert ({CLIENT_KEY.name}).",
)  # fmt: skip
@click.option(
    "--token-file", metavar="FILE", default=None,
    help=f"File whose first line is the bearer token ({TOKEN_FILE.name}; or {TOKEN.name}).",
)  # fmt: skip
def cli(
    tls: bool | None,
    tls_ca: str | None,
    client_cert: str | None,
    client_key: str | None,
    token_file: str | None,
) -> None:
    """artifactd: a gRPC artifact service for machine-learning runs.

    The TLS and token options apply to the client commands; `serve` has its own (--tls-cert,
    --tls-key, --tls-client-ca, --auth-*).
    """
    # The client commands read their settings from the environment: the options set it.
    for variable, value in (
        (TLS, "1" if tls else None), (TLS_CA, tls_ca),
        (CLIENT_CERT, client_cert), (CLIENT_KEY, client_key),
        (TOKEN_FILE, token_file),
    ):  # fmt: skip
        if value is not None:
            os.environ[variable.name] = value


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    click.echo(f"artifactd: warning: {message}", err=True)


def main(*args: Any) -> None:
    warnings.showwarning = _one_line_warning
    cli(*args)


if __name__ == "__main__":
    main()
