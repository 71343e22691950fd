"""Fresh, uniquely named databases on the local PostgreSQL and MariaDB servers (and SQLite files).

Tests that need a backend store make one here and drop it afterwards. A server that cannot be
reached is an error naming the server and the reason: the store's tests fail, they never skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from artifactd_server.store.database import normalize_uri

BACKENDS = ("sqlite", "postgresql", "mariadb")
# Maintenance connections: the `postgres` database, and MariaDB without a database.
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
MARIADB_SERVER = "mysql://root@127.0.0.1:3306"
CONNECT_TIMEOUT_S = 5


class DatabaseServerUnavailable(RuntimeError):
    """The test database server could not be reached or refused to create/drop a database."""


def backend_of(uri: str) -> str:
    """The backend name (one of `BACKENDS`) a URI made here belongs to."""
    scheme = uri.partition("://")[0].split("+")[0]
    return {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mariadb"}[scheme]


def _admin_engine(backend: str) -> tuple[str, Engine]:
    if backend == "postgresql":
        uri = f"{POSTGRES_SERVER}/postgres"
    elif backend == "mariadb":
        uri = f"{MARIADB_SERVER}/"
    else:
        raise ValueError(f"no database server for backend {backend!r}")
    engine = create_engine(
        normalize_uri(uri),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
    return uri, engine


def _run_admin(backend: str, statements: list[str], doing: str) -> None:
    uri, engine = _admin_engine(backend)
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseServerUnavailable(
            f"{backend} test server at {uri}: cannot {doing}: {reason}"
        ) from exc
    finally:
        engine.dispose()


def create_database(backend: str, tmp_dir: Path) -> str:
    """Creates an empty database; returns its URI (the form users write, without a driver)."""
    name = f"artifactd_test_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / (name + '.db')}"
    if backend == "postgresql":
        _run_admin(backend, [f'CREATE DATABASE "{name}"'], f"create database {name}")
        return f"{POSTGRES_SERVER}/{name}"
    if backend == "mariadb":
        statement = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        _run_admin(backend, [statement], f"create database {name}")
        return f"{MARIADB_SERVER}/{name}"
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def drop_database(uri: str) -> None:
    """Drops a database made by `create_database` (other sessions on it are ended first)."""
    backend = backend_of(uri)
    name = make_url(normalize_uri(uri)).database
    if backend == "sqlite":
        assert name
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(name + suffix).unlink(missing_ok=True)
        return
    assert name and name.startswith("artifactd_test_"), name
    if backend == "postgresql":
        statement = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        statement = f"DROP DATABASE IF EXISTS `{name}`"
    _run_admin(backend, [statement], f"drop database {name}")


@contextmanager
def fresh_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """A new empty database's URI for the duration of the block."""
    uri = create_database(backend, tmp_dir)
    try:
        yield uri
    finally:
        drop_database(uri)
