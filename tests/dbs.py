"""Making and dropping test databases where a per-test fixture does not fit: a Hypothesis state
machine needs a fresh ledger per example, a migration test needs an empty database.

:class:`DatabaseMaker` makes them the way ``conftest.fresh_database`` does: a migrated database
is a copy of the session's template (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on
PostgreSQL); an empty one is a new file name or a plain ``CREATE DATABASE``.
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from tests import pgserver

_counter = itertools.count()


def pg_admin(server: pgserver.PostgresServer) -> psycopg.Connection:
    return psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True
    )


@dataclass
class DatabaseMaker:
    """Makes databases of one ``engine`` ("sqlite" or "postgresql") and drops them again."""

    engine: str
    directory: Path
    sqlite_template: Path | None = None
    server: pgserver.PostgresServer | None = None
    postgres_template: str | None = None
    made: list[str] = field(default_factory=list)

    def create(self, *, migrated: bool = True) -> str:
        """A new database URL: migrated to head (a template copy) or completely empty."""
        number = next(_counter)
        if self.engine == "sqlite":
            path = self.directory / f"made-{number}.sqlite3"
            if migrated:
                assert self.sqlite_template is not None
                shutil.copy(self.sqlite_template, path)
            else:
                path.touch()  # an empty file is an empty SQLite database
            url = f"sqlite:///{path}"
        else:
            assert self.server is not None
            name = f"made_{os.getpid()}_{number}"
            template = f" TEMPLATE {self.postgres_template}" if migrated else ""
            assert not migrated or self.postgres_template is not None
            with pg_admin(self.server) as admin:
                admin.execute(f"CREATE DATABASE {name}{template}")
            url = self.server.url(name)
        self.made.append(url)
        return url

    def drop(self, url: str) -> None:
        """Remove a database made here (idempotent)."""
        if url in self.made:
            self.made.remove(url)
        database = make_url(url).database
        assert database
        if self.engine == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(database + suffix).unlink(missing_ok=True)
            return
        assert self.server is not None
        with pg_admin(self.server) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    def drop_all(self) -> None:
        for url in list(self.made):
            self.drop(url)
