"""Both engines come up migrated, and refuse what the schema forbids."""

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from cbdc.services.context import LedgerContext
from cbdc.storage.engine import SQLITE_WAL_CHECKPOINT_PAGES, make_engine


def test_both_engines_run_at_head(ledger: LedgerContext, database_url: str) -> None:
    dialect = ledger.engine.dialect.name
    assert dialect == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
    with ledger.read() as connection:
        assert connection.execute(text("SELECT last_seq FROM ledger_head")).scalar() == 0


def test_sqlite_connections_run_in_wal_with_rare_checkpoints(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.sqlite3'}")
    with engine.connect() as connection:
        def pragma(name: str) -> object:
            return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("foreign_keys") == 1
        assert pragma("wal_autocheckpoint") == SQLITE_WAL_CHECKPOINT_PAGES > 1_000
    engine.dispose()


def test_negative_balance_refused_by_database(ledger: LedgerContext) -> None:
    with pytest.raises(IntegrityError), ledger.write() as connection:
        connection.execute(
            text("UPDATE accounts SET balance_fen = -1 WHERE code = 'cb:issuance'")
        )  # allowed for issuance...
        connection.execute(text("INSERT INTO accounts (code, kind, institution_id, balance_fen, "
                                "created_at) VALUES ('x', 'float', 1, -5, CURRENT_TIMESTAMP)"))


def test_journal_refuses_update_and_delete(ledger: LedgerContext) -> None:
    from cbdc.domain.money import yuan
    from cbdc.services import issuance

    issuance.create_operator(ledger, "BANK-A", "Bank A", quota_fen=yuan(10))
    issuance.deposit_reserve(ledger, "r-1", "BANK-A", yuan(10))
    for statement in (
        "UPDATE postings SET amount_fen = amount_fen * 2",
        "DELETE FROM postings",
        "UPDATE journal_entries SET kind = 'x'",
        "DELETE FROM journal_entries",
    ):
        with pytest.raises(DBAPIError, match="append-only"), ledger.write() as connection:
            connection.execute(text(statement))


def test_nested_units_of_work_commit_or_roll_back_together(ledger: LedgerContext) -> None:
    from cbdc.domain.errors import CbdcError
    from cbdc.domain.money import yuan
    from cbdc.services import issuance

    issuance.create_operator(ledger, "BANK-B", "Bank B", quota_fen=yuan(10))
    with pytest.raises(CbdcError), ledger.write():
        issuance.deposit_reserve(ledger, "r-nested", "BANK-B", yuan(10))
        issuance.issue(ledger, "i-too-much", "BANK-B", yuan(11))  # over quota: all rolls back
    with ledger.read() as connection:
        count = connection.execute(text("SELECT count(*) FROM journal_entries")).scalar()
    assert count == 0
    with ledger.write():
        issuance.deposit_reserve(ledger, "r-nested", "BANK-B", yuan(10))
        issuance.issue(ledger, "i-fits", "BANK-B", yuan(10))
    with ledger.read() as connection:
        count = connection.execute(text("SELECT count(*) FROM journal_entries")).scalar()
    assert count == 2
