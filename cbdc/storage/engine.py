"""Engine set-up per dialect, and the two kinds of transaction the services open.

SQLite (embedded default): WAL, ``synchronous=NORMAL``, a checkpoint every
:data:`SQLITE_WAL_CHECKPOINT_PAGES` pages of WAL, foreign keys on, and pysqlite's own
transaction handling switched off so that *we* emit ``BEGIN IMMEDIATE`` for every write
transaction. Without it, Python's sqlite3 starts no transaction before a SELECT, and a
read-check-write races (two payments of 80 from a balance of 100 both succeed).
PostgreSQL (production): psycopg 3, READ COMMITTED; writers lock the chain head row and then the
accounts they touch in ascending id order (see :mod:`cbdc.storage.journal`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from cbdc.domain.errors import DatabaseUnavailable, InvalidRequest

DEFAULT_DATABASE_URL = "sqlite:///cbdc.sqlite3"
ENV_DATABASE_URL = "CBDC_DATABASE_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: WAL pages (4 KiB) written before SQLite copies them back into the database file (its default
#: is 1,000). A settlement batch touches a few hundred pages spread over the indexes, so at
#: 1,000 nearly every other commit checkpointed; the pages rewritten between two checkpoints
#: are copied back once. 10,000 made the default simulation about 10 % faster than 1,000;
#: 20,000 (a WAL of about 80 MiB) about 2 % faster again (six interleaved pairs, five of them
#: faster). Not much more: with no checkpoints at all, lookups slow down as the WAL grows.
SQLITE_WAL_CHECKPOINT_PAGES = 20_000


def database_url_from_env() -> str:
    return os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL


def normalise_url(url: str) -> str:
    """Send plain ``postgresql://`` URLs to psycopg 3 rather than SQLAlchemy's psycopg2 default.
    A text that is not a URL of one of the two engines is ``database_url_invalid``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise _invalid_url(f"not a database URL: {url!r}") from None
    if parsed.drivername == "postgres":
        parsed = parsed.set(drivername="postgresql")
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # whatever driver the URL named
    elif backend != "sqlite" or parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
        raise _invalid_url(f"cbdc runs on SQLite (sqlite:///FILE) or PostgreSQL "
                           f"(postgresql://USER@HOST/DB), not {parsed.drivername}")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise _invalid_url("cbdc needs a SQLite file (WAL and several connections need one)")
    return parsed.render_as_string(hide_password=False)


def database_unavailable(error: DBAPIError) -> DatabaseUnavailable | None:
    """The driver's refusal to give a database (a server that does not answer, a file that
    cannot be opened or is not a database, a lock held too long) as a domain error, with the
    driver's first line as its detail; ``None`` for any other database error (a constraint, a
    bug), which is not the database's absence."""
    unusable = isinstance(error, OperationalError) or type(error.orig).__name__ == "DatabaseError"
    if not unusable:
        return None
    first_line = str(error.orig or error).strip().splitlines()[0]
    return DatabaseUnavailable(f"the ledger database is unavailable: {first_line}")


def _invalid_url(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, code="database_url_invalid", field="database_url")


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    url = normalise_url(url or database_url_from_env())
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("cbdc_read_only"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_sqlite(engine_or_connection: Engine | Connection) -> bool:
    return engine_or_connection.dialect.name == "sqlite"


#: SQLSTATEs of a unit of work that lost a race and may simply be run again on a fresh snapshot:
#: a unique key taken meanwhile, a statement after such an error in the same transaction,
#: a serialization failure, a deadlock.
RETRYABLE_SQLSTATES = frozenset({"23505", "25P02", "40001", "40P01"})


def lost_a_race(error: DBAPIError) -> bool:
    """Did this unit of work fail only because a concurrent one committed first? (PostgreSQL;
    SQLite's BEGIN IMMEDIATE serialises writers, so its errors are never this.)"""
    return getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One unit of work that writes: BEGIN IMMEDIATE on SQLite; commits once at the end."""
    with engine.connect() as connection, connection.begin():
        yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A consistent read-only snapshot (deferred BEGIN on SQLite, REPEATABLE READ on PostgreSQL)."""
    options: dict[str, Any] = {"cbdc_read_only": True}
    if not is_sqlite(engine):
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as connection, connection.begin():
        yield connection
