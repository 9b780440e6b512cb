"""The schema comes only from the Alembic migrations: they round-trip, they agree with the
SQLAlchemy tables, and the application refuses a database that is behind. On both engines, each
test on fresh empty databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from cbdc.cli import app
from cbdc.domain.errors import SchemaOutOfDate
from cbdc.domain.money import yuan
from cbdc.services import issuance
from cbdc.services.audit import run_audit
from cbdc.services.context import open_ledger
from cbdc.storage import migrate
from cbdc.storage.engine import make_engine
from cbdc.storage.tables import ledger_head, metadata
from tests.dbs import DatabaseMaker

EXAMPLE_PLAN = Path(__file__).resolve().parents[2] / "examples" / "issuance-plan.toml"
FIRST_REVISION = "0001_ledger_core"
#: Every table the code knows; the migrations must create exactly these.
SCHEMA_TABLES = set(metadata.tables)
CORE_TABLES = {"institutions", "accounts", "journal_entries", "postings", "ledger_head"}


@pytest.fixture
def empty_url(database_maker: DatabaseMaker) -> str:
    return database_maker.create(migrated=False)


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def check_constraint_names(engine: Engine) -> dict[str, set[str | None]]:
    """Autogenerate does not compare CHECK constraints; compare their names ourselves."""
    inspector = inspect(engine)
    return {
        table: {check["name"] for check in inspector.get_check_constraints(table)}
        for table in sorted(SCHEMA_TABLES)
    }


def guard_objects(engine: Engine) -> set[str]:
    """The append-only triggers (and the PostgreSQL function behind them)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            ).scalars()
            return set(rows)
        triggers = connection.execute(
            text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        ).scalars()
        functions = connection.execute(
            text("SELECT proname FROM pg_proc WHERE proname = 'cbdc_refuse_change'")
        ).scalars()
        return set(triggers) | set(functions)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_downgrade_upgrade_round_trip(empty_url: str, engine: Engine) -> None:
    assert table_names(engine) == set()
    assert migrate.current_revision(engine) is None

    migrate.upgrade(empty_url)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert table_names(engine) == SCHEMA_TABLES | {"alembic_version"}
    guards = guard_objects(engine)
    assert {name for name in guards if "journal_entries_append_only" in name}
    assert {name for name in guards if "postings_append_only" in name}

    migrate.downgrade(empty_url, "base")
    engine.dispose()  # forget cached schema state between the steps
    assert migrate.current_revision(engine) is None
    assert table_names(engine) == {"alembic_version"}
    assert guard_objects(engine) == set()

    migrate.upgrade(empty_url)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert table_names(engine) == SCHEMA_TABLES | {"alembic_version"}
    assert guard_objects(engine) == guards
    assert schema_differences(engine) == []
    with engine.connect() as connection:
        assert connection.execute(select(ledger_head)).all() == [(1, 0, "0" * 64)]


def test_models_and_migrations_agree(empty_url: str, engine: Engine) -> None:
    migrate.upgrade(empty_url)
    assert schema_differences(engine) == []
    expected_checks = {
        table.name: {
            constraint.name
            for constraint in table.constraints
            if constraint.__class__.__name__ == "CheckConstraint"
        }
        for table in metadata.sorted_tables
    }
    assert check_constraint_names(engine) == expected_checks
    assert CORE_TABLES <= SCHEMA_TABLES


def test_a_schema_difference_would_be_seen(empty_url: str, engine: Engine) -> None:
    """The comparison has teeth: a column the models do not know is reported."""
    migrate.upgrade(empty_url)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE accounts ADD COLUMN nickname VARCHAR(20)"))
    differences = schema_differences(engine)
    assert len(differences) == 1
    assert "nickname" in repr(differences)


def test_the_guards_work_after_a_round_trip(empty_url: str, engine: Engine) -> None:
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")
    migrate.upgrade(empty_url)
    ledger = open_ledger(empty_url)
    try:
        issuance.create_operator(ledger, "ICBC", "ICBC")
        issuance.deposit_reserve(ledger, "r-1", "ICBC", yuan(10))
        for statement in ("DELETE FROM journal_entries", "UPDATE postings SET amount_fen = 1"):
            with pytest.raises(DBAPIError, match="append-only"), ledger.write() as connection:
                connection.execute(text(statement))
        assert run_audit(ledger).entries_checked == 1
    finally:
        ledger.dispose()


def test_open_ledger_refuses_a_schema_behind_head(
    empty_url: str, engine: Engine, database_maker: DatabaseMaker
) -> None:
    with pytest.raises(SchemaOutOfDate) as raised:
        open_ledger(empty_url)
    assert raised.value.code == "schema_out_of_date"
    assert raised.value.status == 503
    assert "cbdc db upgrade" in raised.value.detail

    # A database one migration behind (the ledger core only) is refused, naming both revisions.
    migrate.upgrade(empty_url, FIRST_REVISION)
    assert migrate.head_revision() != FIRST_REVISION
    with pytest.raises(SchemaOutOfDate, match=f"at {FIRST_REVISION}, the code needs"):
        open_ledger(empty_url)

    # A database migrated to head and then taken back below it is refused the same way.
    downgraded = database_maker.create(migrated=True)
    migrate.downgrade(downgraded, "base")
    with pytest.raises(SchemaOutOfDate, match="nothing"):
        open_ledger(downgraded)


@pytest.mark.parametrize(
    "command",
    [["audit"], ["reconcile"], ["issue", "run", str(EXAMPLE_PLAN)]],
)
def test_the_cli_refuses_a_schema_behind_head_with_exit_2(
    empty_url: str, engine: Engine, command: list[str]
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, [*command, "--database-url", empty_url])
    assert result.exit_code == 2, result.output
    assert "[schema_out_of_date]" in result.output
    assert table_names(engine) == set(), "nothing was created"

    migrate.upgrade(empty_url, FIRST_REVISION)
    behind = runner.invoke(app, [*command, "--database-url", empty_url])
    assert behind.exit_code == 2, behind.output
    assert "[schema_out_of_date]" in behind.output

    current = runner.invoke(app, ["db", "current", "--database-url", empty_url])
    assert current.exit_code == 0
    assert "BEHIND" in current.output

    upgraded = runner.invoke(app, ["db", "upgrade", "--database-url", empty_url])
    assert upgraded.exit_code == 0, upgraded.output
    assert migrate.head_revision() in upgraded.output
    assert runner.invoke(app, ["audit", "--database-url", empty_url]).exit_code == 0
