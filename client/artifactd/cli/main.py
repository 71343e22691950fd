"""`artifactd`: the root command. Commands other than `artifacts` and `health` are imported when
they are run (`serve` pulls in the server), so client commands start fast."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import click

from artifactd.cli.artifacts import artifacts, health_command

_LAZY_COMMANDS = {
    "serve": ("artifactd.server.cli", "serve_command"),
    "experiments": ("artifactd.cli.tracking", "experiments"),
    "runs": ("artifactd.cli.tracking", "runs"),
    "gc": ("artifactd.cli.gc", "gc_command"),
    "db": ("artifactd.cli.db", "db"),
}


class _Root(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY_COMMANDS:
            module, name = _LAZY_COMMANDS[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY_COMMANDS])


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="artifactd")
def cli() -> None:
    """artifactd: a gRPC artifact service for machine-learning runs."""


cli.add_command(artifacts)
cli.add_command(health_command)


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any, **__: Any
) -> None:
    click.echo(f"artifactd: warning: {message}", err=True)


def main(*args: Any) -> None:
    warnings.showwarning = _one_line_warning
    cli(*args)


if __name__ == "__main__":
    main()
