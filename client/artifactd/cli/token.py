"""`artifactd token create`: makes a bearer token and the tokens-file entry that admits it.

The token is printed once and never stored; the file keeps only its digest.
"""

from __future__ import annotations

import json
import sys
import tomllib

import click

from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.grants import format_grant, new_token, parse_grant, token_digest


@click.group("token")
def token_group() -> None:
    """Bearer tokens for servers started with --auth-tokens-file."""


@token_group.command("create")
@click.option("--principal", required=True, help="Who the token identifies (shown in logs).")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="reader, writer or admin, optionally ':<experiment id>' (repeatable).",
)
@click.option(
    "--append",
    "tokens_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append the entry to this tokens file (checked afterwards); send the server SIGHUP.",
)
def create_command(principal: str, roles: tuple[str, ...], tokens_file: str | None) -> None:
    """Print a new token on stdout and its [[token]] entry (on stderr, or appended to a file)."""
    try:
        grants = [format_grant(parse_grant(role)) for role in roles]
    except InvalidArgument as exc:
        raise click.UsageError(exc.message) from None
    if not principal.strip():
        raise click.UsageError("--principal must not be empty")
    token = new_token()
    entry = (
        "\n[[token]]\n"
        f"principal = {json.dumps(principal.strip())}\n"
        f'sha256 = "{token_digest(token)}"\n'
        f"roles = {json.dumps(grants)}\n"
    )
    if tokens_file is None:
        click.echo(f"# add to the tokens file:{entry}", err=True)
    else:
        with open(tokens_file, "a", encoding="utf-8") as fh:
            fh.write(entry)
        # The server validates the whole file when it reloads; this client cannot (it has no
        # server code), but it can tell at once that an append broke the file's TOML.
        try:
            with open(tokens_file, "rb") as fh:
                tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            click.echo(
                f"artifactd: the entry was appended, but {tokens_file} is not valid TOML: {exc}",
                err=True,
            )
            sys.exit(1)
        click.echo(f"appended to {tokens_file}; reload the server with SIGHUP", err=True)
    click.echo(token)
