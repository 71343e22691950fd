"""`artifactd token create`: makes a bearer token and the tokens-file entry that admits it.

The token is printed once and never stored; the file keeps only its digest.
"""

from __future__ import annotations

import json
import sys

import click

from artifactd.errors import InvalidArgument
from artifactd.server.auth.grants import format_grant, parse_grant
from artifactd.server.auth.tokens import load_tokens, new_token, token_digest


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
        try:
            load_tokens(tokens_file)
        except InvalidArgument as exc:
            click.echo(
                f"artifactd: the entry was appended, but the file is invalid: {exc}", err=True
            )
            sys.exit(1)
        click.echo(f"appended to {tokens_file}; reload the server with SIGHUP", err=True)
    click.echo(token)
