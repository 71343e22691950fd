"""`artifactd`: the root command. `serve` is imported lazily so client commands start fast."""

from __future__ import annotations

import warnings
from typing import Any

import click

from artifactd.cli.artifacts import artifacts, health_command


class _Root(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "serve":
            from artifactd.server.cli import serve_command

            return serve_command
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "serve"])


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
