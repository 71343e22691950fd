"""Connecting to the backend store and keeping its schema current.

A URI names the database the SQLAlchemy way. The schemes MLflow users already have are accepted
as they are: `postgresql://` and `mysql://` pick the drivers artifactd installs (psycopg 3 and
PyMySQL, the `postgres` and `mysql` extras of artifactd-server) instead of SQLAlchemy's defaults;
a missing driver is one line naming its extra. A new, empty database is
migrated on first start; an older schema is migrated only on request (`artifactd db upgrade`),
and a schema newer than this code is refused, since writing to it could corrupt what a newer
artifactd relies on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, Engine, create_engine, event, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from artifactd.protocol.errors import FailedPrecondition, InvalidArgument, Unavailable
from artifactd_server.extras import raise_missing_extra

log = logging.getLogger(__name__)
_Model = TypeVar("_Model")

VERSION_TABLE = "artifactd_schema_version"
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}  # fmt: skip
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}  # artifactd-server[...]
DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for the backend store (`--backend-store-timeout`)."""

# What a database outage looks like from SQLAlchemy: the driver could not connect or lost its
# connection (OperationalError; PyMySQL's InterfaceError on a socket closed under it), or every
# pooled connection is held by calls waiting on a database that does not answer (pool timeout).
_OUTAGES = (OperationalError, InterfaceError, PoolTimeout)
_REASONS = (
    (("refused",), "connection refused"),
    (("timeout", "timed out"), "it did not answer in time"),
    (("closed", "lost", "gone away", "terminat", "shutdown", "shutting down", "broken pipe",
      "reset by peer", "eof"), "the connection was lost"),
)  # fmt: skip


def outage_reason(exc: BaseException) -> str | None:
    """A short, credential-free reason when `exc` means the backend store is unreachable (for
    the UNAVAILABLE message and the log); None for any other error.

    The driver's own text is not passed on: it names hosts, ports and users."""
    if not isinstance(exc, _OUTAGES):
        return None
    if isinstance(exc, PoolTimeout):
        return "no connection to it became free in time (the database is slow or not answering)"
    return _reason_in(str(getattr(exc, "orig", None) or exc))


def _reason_in(text: str) -> str:
    text = text.lower()
    for needles, reason in _REASONS:
        if any(needle in text for needle in needles):
            return reason
    return "cannot reach it"


class _PoolOutageLogs(logging.Filter):
    """Turns the traceback SQLAlchemy's pool logs when it cannot reset or close a connection the
    database dropped (ERROR "Exception during reset or similar", with the driver's own
    OperationalError or InterfaceError) into one warning line. In an outage that happens for
    every pooled connection; the calls themselves already answer UNAVAILABLE and the log says
    the store is away, so a traceback per connection only buries that."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        driver_outage = {"OperationalError", "InterfaceError"}  # DB-API names, any driver
        if not isinstance(exc, _OUTAGES) and not any(
            cls.__name__ in driver_outage for cls in type(exc).__mro__
        ):
            return True
        reason = _reason_in(str(exc))
        record.msg = f"{record.getMessage()}: a backend store connection was lost ({reason})"
        record.args = None
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


_POOL_OUTAGE_LOGS = _PoolOutageLogs()


def normalize_uri(uri: str) -> str:
    """The SQLAlchemy URL for `uri`, with artifactd's drivers for bare scheme names."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise InvalidArgument(
            f"backend store URI {uri!r} is not a database URI; expected e.g. "
            "sqlite:///artifactd.db, postgresql://user@host/db or mysql://user@host/db"
        )
    return f"{_DRIVERS.get(scheme.lower(), scheme)}://{rest}"


def redact(uri: str) -> str:
    """`uri` with any password masked, for logs and error messages."""
    try:
        return make_url(normalize_uri(uri)).render_as_string(hide_password=True)
    except (ArgumentError, InvalidArgument):
        return "<unparsable backend store URI>"


class Database:
    """An engine and a session factory for one backend store."""

    def __init__(self, uri: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """`timeout` bounds the wait for the database: to connect, for a pooled connection, and
        (MySQL/MariaDB, whose driver has one) for each answer, so that calls fail with
        UNAVAILABLE within seconds when it is down instead of hanging."""
        self.uri = uri
        url = normalize_uri(uri)
        kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_timeout": timeout}
        seconds = max(2, round(timeout))  # the drivers take whole seconds; libpq's minimum is 2
        if url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": seconds}
        elif url.startswith(("mysql", "mariadb")):
            kwargs["connect_args"] = {
                "connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds,
            }  # fmt: skip
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
            kwargs.pop("pool_timeout")
            database = make_url(url).database
            if database and database != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise InvalidArgument(f"backend store URI {redact(uri)!r}: {exc}") from None
        except ImportError as exc:  # the dialect's driver: psycopg or PyMySQL, an extra each
            backend = make_url(url).get_backend_name()
            raise_missing_extra(f"a {backend} backend store", _EXTRAS.get(backend), exc)
        pool_logger = getattr(self.engine.pool, "logger", None)
        if isinstance(pool_logger, logging.Logger):  # not when echo_pool wraps it
            pool_logger.addFilter(_POOL_OUTAGE_LOGS)  # once per logger: the same filter object
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def lock_row(
    session: Session, model: type[_Model], *where: ColumnElement[bool], skip_locked: bool
) -> _Model | None:
    """The one row matching `where`, locked until `session`'s transaction ends; None if none.

    This is how replicas sharing a backend store take turns on a record (a deleted run to
    collect, an expired upload session to sweep) without a lock service of their own: the
    database's row lock is held exactly as long as the transaction, so a replica that dies
    releases it with its connection, and one transaction holds one such lock at a time, so
    there is no lock order to get wrong. PostgreSQL, MariaDB >= 10.6 and MySQL 8 lock the row
    (`FOR UPDATE`); with `skip_locked` a row another transaction holds reads as absent instead
    of being waited for. The conditions are evaluated on the newest committed version, so a
    row changed or deleted by the holder is re-checked, never acted on stale. SQLite has no
    row locks: a no-op UPDATE takes the database's single write lock (waiting, with SQLite's
    busy timeout, whatever `skip_locked` says), so a second writer waits for the first to
    commit and then finds the row changed or gone.
    """
    if session.get_bind().dialect.name == "sqlite":
        key = inspect(model).primary_key[0]
        taken = session.execute(
            update(model)
            .where(*where)
            .values({key.name: key})
            .execution_options(synchronize_session=False)
        )
        if not taken.rowcount:  # type: ignore[attr-defined]
            return None
        return session.scalar(select(model).where(*where))
    return session.scalar(select(model).where(*where).with_for_update(skip_locked=skip_locked))


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL lets readers (the server) and a writer (say, `artifactd gc` in another process) work
    # at once; foreign keys are off in SQLite unless asked for.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option(
        "script_location", str(files("artifactd_server.store").joinpath("migrations"))
    )
    return config


def schema_status(database: Database) -> tuple[str | None, str]:
    """(the database's current revision or None when it has none, the code's newest)."""
    script = ScriptDirectory.from_config(_alembic_config(database))
    head = script.get_current_head()
    assert head is not None
    with database.engine.connect() as connection:
        current = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
    return current, head


def _known(database: Database, revision: str) -> bool:
    script = ScriptDirectory.from_config(_alembic_config(database))
    return any(r.revision == revision for r in script.walk_revisions())


def upgrade(database: Database) -> tuple[str | None, str]:
    """Migrates to the newest schema; returns (revision before, revision after)."""
    current, head = schema_status(database)
    if current is not None and not _known(database, current):
        raise _newer_than_code(database, current, head)
    if current != head:
        config = _alembic_config(database)
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        log.info("backend store %s migrated from %s to %s", redact(database.uri), current, head)
    return current, head


def ensure_current(database: Database) -> None:
    """Migrates a new database; refuses an outdated or a newer schema with what to do about it."""
    current, head = schema_status(database)
    if current == head:
        return
    if current is None:
        tables = set(inspect(database.engine).get_table_names())
        ours = {t for t in tables if t.startswith("artifactd_")}
        if ours:
            raise FailedPrecondition(
                f"backend store {redact(database.uri)} has artifactd tables ({sorted(ours)}) "
                f"but no {VERSION_TABLE} table; it was not made by artifactd's migrations"
            )
        upgrade(database)
        return
    if not _known(database, current):
        raise _newer_than_code(database, current, head)
    raise FailedPrecondition(
        f"backend store {redact(database.uri)} has schema revision {current}, older than this "
        f"artifactd's {head}; back it up, then run `artifactd db upgrade "
        f"--backend-store-uri <uri>`"
    )


def _newer_than_code(database: Database, current: str, head: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"backend store {redact(database.uri)} has schema revision {current!r}, which this "
        f"artifactd (newest known: {head!r}) does not know: a newer artifactd migrated it. "
        "Run that newer version, or point --backend-store-uri at another database"
    )


def open_database(uri: str, timeout: float = DEFAULT_TIMEOUT) -> Database:
    """Connects and checks the schema, migrating a brand-new database."""
    database = Database(uri, timeout)
    try:
        ensure_current(database)
    except _OUTAGES as exc:
        database.close()
        cause = getattr(exc, "orig", None) or exc
        raise Unavailable(f"cannot use backend store {redact(uri)}: {cause}") from None
    except BaseException:
        database.close()
        raise
    return database
