"""`artifactd db upgrade`: migrate a backend store to this artifactd's schema.

The server migrates a brand-new database itself but refuses an older schema, so that upgrading a
shared database is a step someone takes on purpose (after a backup), with this command.
"""

from __future__ import annotations

import click

from artifactd.cli.common import fail, friendly_errors
from artifactd.defaults import BACKEND_STORE_VARIABLE


@click.group("db")
def db() -> None:
    """Manage the backend store database."""


@db.command("upgrade")
@click.option(
    "--backend-store-uri",
    envvar=BACKEND_STORE_VARIABLE,
    required=True,
    help="The database, e.g. sqlite:///artifactd.db, postgresql://user@host/db "
    f"(env {BACKEND_STORE_VARIABLE}).",
)
@friendly_errors
def upgrade_command(backend_store_uri: str) -> None:
    """Migrate the backend store's schema to the newest revision (back it up first)."""
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from artifactd.server.store.database import Database, redact, upgrade
    except ImportError as exc:
        fail(f"db upgrade needs the artifactd server and its database drivers installed ({exc})")
    where = f"backend store {redact(backend_store_uri)}"
    database = Database(backend_store_uri)
    try:
        before, after = upgrade(database)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        fail(f"cannot upgrade {where}: {detail}")
    finally:
        database.close()
    if before == after:
        click.echo(f"{where}: schema already at revision {after}")
    else:
        click.echo(f"{where}: schema upgraded from revision {before or '(none)'} to {after}")
