"""The hand-written migrations build exactly the tables the code declares, on both engines, and
0002 (wallets and payments) and 0003 (offline devices) downgrade and upgrade cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from cbdc.storage import migrate
from cbdc.storage.engine import make_engine
from cbdc.storage.tables import metadata

WALLET_TABLES = {"wallets", "wallet_identities", "wallet_keys", "payments", "payment_requests",
                 "payment_codes"}
OFFLINE_TABLES = {"offline_devices", "offline_loads", "offline_unloads", "offline_payments",
                  "offline_settlements", "offline_operator_losses", "offline_fraud_cases",
                  "offline_revocation_lists", "offline_revocations"}


def differences(database_url: str) -> list[object]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def table_names(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_match_the_tables(database_url: str) -> None:
    assert differences(database_url) == []


def test_wallets_migration_downgrades_and_upgrades(database_url: str) -> None:
    assert table_names(database_url) >= WALLET_TABLES
    migrate.downgrade(database_url, "0001_ledger_core")
    assert not WALLET_TABLES & table_names(database_url)
    migrate.upgrade(database_url)
    assert table_names(database_url) >= WALLET_TABLES
    assert differences(database_url) == []


def test_offline_migration_downgrades_and_upgrades(database_url: str) -> None:
    assert table_names(database_url) >= OFFLINE_TABLES | WALLET_TABLES
    migrate.downgrade(database_url, "0002_wallets_payments")
    assert not OFFLINE_TABLES & table_names(database_url)
    assert table_names(database_url) >= WALLET_TABLES
    migrate.upgrade(database_url)
    assert table_names(database_url) >= OFFLINE_TABLES
    assert differences(database_url) == []
