"""`artifactd`: the root command. Commands other than `artifacts` and `health` are imported when
they are run (`serve` pulls in the server), so client commands start fast."""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import click

from artifactd.cli.artifacts import artifacts, health_command
from artifactd.client.settings import (
    CLIENT_CERT_VARIABLE,
    CLIENT_KEY_VARIABLE,
    TLS_CA_VARIABLE,
    TLS_VARIABLE,
    TOKEN_FILE_VARIABLE,
    TOKEN_VARIABLE,
)

_LAZY_COMMANDS = {
    "serve": ("artifactd.server.cli", "serve_command"),
    "token": ("artifactd.server.auth.cli", "token_group"),
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
@click.option("--tls", is_flag=True, default=None, help=f"Connect with TLS ({TLS_VARIABLE}=1).")
@click.option(
    "--tls-ca", metavar="PEM", default=None,
    help=f"CA bundle the server's certificate is checked against ({TLS_CA_VARIABLE}).",
)  # fmt: skip
@click.option(
    "--client-cert", metavar="PEM", default=None,
    help=f"Client certificate for mutual TLS ({CLIENT_CERT_VARIABLE}).",
)  # fmt: skip
@click.option(
    "--client-key", metavar="PEM", default=None,
    help=f"Key of --client-cert ({CLIENT_KEY_VARIABLE}).",
)  # fmt: skip
@click.option(
    "--token-file", metavar="FILE", default=None,
    help=f"File whose first line is the bearer token ({TOKEN_FILE_VARIABLE}; or {TOKEN_VARIABLE}).",
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
        (TLS_VARIABLE, "1" if tls else None), (TLS_CA_VARIABLE, tls_ca),
        (CLIENT_CERT_VARIABLE, client_cert), (CLIENT_KEY_VARIABLE, client_key),
        (TOKEN_FILE_VARIABLE, token_file),
    ):  # fmt: skip
        if value is not None:
            os.environ[variable] = value


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
