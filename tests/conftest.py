"""Shared fixtures: every database test runs on a fresh migrated SQLite file AND a fresh
migrated PostgreSQL database (from a throwaway server started for the session).

Each database starts as a copy of a template migrated once per session, so migrations are
exercised on both engines and tests stay fast.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from cbdc.clock import ManualClock
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.storage import migrate
from tests import pgserver
from tests.dbs import DatabaseMaker

settings.register_profile(
    "ci",
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile(
    "soak",
    max_examples=1000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ENGINES = ("sqlite", "postgresql")
START_OF_TESTS = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pgserver.PostgresServer]:
    external = os.environ.get("CBDC_TEST_POSTGRES_ADMIN_URL")
    if external:
        raise pytest.UsageError("external PostgreSQL is not supported; let the suite start one")
    try:
        server = pgserver.start()
    except pgserver.PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL could not start, and these tests do not skip: {exc}")
    yield server
    server.stop()


def _pg_admin(server: pgserver.PostgresServer) -> psycopg.Connection:
    return psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True
    )


@pytest.fixture(scope="session")
def postgres_template(postgres_server: pgserver.PostgresServer) -> str:
    with _pg_admin(postgres_server) as admin:
        admin.execute("CREATE DATABASE cbdc_template")
    migrate.upgrade(postgres_server.url("cbdc_template"))
    return "cbdc_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def fresh_database(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A new empty migrated database of ``engine``; dropped (PostgreSQL) after the test."""
    if engine == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / f"ledger-{next(_counter)}.sqlite3"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    server: pgserver.PostgresServer = request.getfixturevalue("postgres_server")
    template_name = request.getfixturevalue("postgres_template")
    name = f"test_{os.getpid()}_{next(_counter)}"
    with _pg_admin(server) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_name}")
    yield server.url(name)
    with _pg_admin(server) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(request.param, request, tmp_path)


@pytest.fixture(params=ENGINES)
def database_maker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseMaker]:
    """Makes as many databases of one engine as a test needs (state machines: one per example);
    whatever it made is dropped after the test."""
    engine: str = request.param
    if engine == "sqlite":
        maker = DatabaseMaker(
            engine, tmp_path, sqlite_template=request.getfixturevalue("sqlite_template")
        )
    else:
        maker = DatabaseMaker(
            engine,
            tmp_path,
            server=request.getfixturevalue("postgres_server"),
            postgres_template=request.getfixturevalue("postgres_template"),
        )
    yield maker
    maker.drop_all()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START_OF_TESTS)


@pytest.fixture
def ledger(database_url: str, clock: ManualClock) -> Iterator[LedgerContext]:
    context = open_ledger(database_url, clock=clock)
    yield context
    context.dispose()
