"""Alembic environment: always runs on the connection `artifactd_server.store.database` hands it."""

from __future__ import annotations

from alembic import context

from artifactd_server.store.database import VERSION_TABLE
from artifactd_server.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
