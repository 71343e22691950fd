"""`artifactd db upgrade`: migrate a backend store to this artifactd's schema.

The server migrates a brand-new database itself but refuses an older schema, so that upgrading a
shared database is a step someone takes on purpose (after a backup), with this command.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError

from artifactd.protocol.environment import BACKEND_STORE_URI
from artifactd.protocol.errors import ArtifactError
from artifactd_server.store.database import Database, redact, upgrade


@click.group("db")
def db() -> None:
    """Manage the backend store database."""


@db.command("upgrade")
@click.option(
    "--backend-store-uri",
    envvar=BACKEND_STORE_URI.name,
    required=True,
    help="The database, e.g. sqlite:///artifactd.db, postgresql://user@host/db "
    f"(env {BACKEND_STORE_URI.name}).",
)
def upgrade_command(backend_store_uri: str) -> None:
    """Migrate the backend store's schema to the newest revision (back it up first)."""
    where = f"backend store {redact(backend_store_uri)}"
    try:
        database = Database(backend_store_uri)
    except ArtifactError as exc:  # a malformed URI, a missing driver (its extra)
        fail(exc.message)
    try:
        before, after = upgrade(database)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        fail(f"cannot upgrade {where}: {detail}")
    except ArtifactError as exc:
        fail(exc.message)
    finally:
        database.close()
    if before == after:
        click.echo(f"{where}: schema already at revision {after}")
    else:
        click.echo(f"{where}: schema upgraded from revision {before or '(none)'} to {after}")


def fail(message: str) -> NoReturn:
    click.echo(f"artifactd: error: {message}", err=True)
    sys.exit(1)
