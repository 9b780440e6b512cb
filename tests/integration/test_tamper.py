"""Tampering with the books behind the ledger's back: the audit names what was changed.

A small ledger is written through the services; then, by raw SQL with the append-only guard
triggers dropped, each test commits one kind of fraud: change one posting amount, delete one
entry from the middle, drift one cached balance, forge one entry with a self-consistent hash, or
swap two entries in the chain. Both ``run_audit`` and ``cbdc audit`` must fail, naming the exact
entry (seq and id) or account and the amount.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from cbdc.cli import app
from cbdc.domain.money import yuan
from cbdc.domain.postings import Posting, entry_hash
from cbdc.services import issuance
from cbdc.services.audit import AuditReport, Finding, run_audit
from cbdc.services.context import LedgerContext
from cbdc.storage.tables import journal_entries, postings

Execute = Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture
def books(ledger: LedgerContext) -> LedgerContext:
    """Two banks, eight journal entries, a clean audit.

    seq  entry  what
    1    r-ICBC reserve deposit ICBC 600,000
    2    r-BOC  reserve deposit BOC  400,000
    3    i-1    issue ICBC 250,000
    4    i-2    issue BOC  150,000
    5    i-3    issue ICBC 200,000
    6    t-1    transfer ICBC float -> BOC float 50,000
    7    d-1    redeem BOC 20,000
    8    i-4    issue BOC 100,000
    """
    issuance.create_operator(ledger, "ICBC", "ICBC", quota_fen=yuan(600_000))
    issuance.create_operator(ledger, "BOC", "Bank of China", quota_fen=yuan(400_000))
    issuance.deposit_reserve(ledger, "r-ICBC", "ICBC", yuan(600_000))
    issuance.deposit_reserve(ledger, "r-BOC", "BOC", yuan(400_000))
    issuance.issue(ledger, "i-1", "ICBC", yuan(250_000))
    issuance.issue(ledger, "i-2", "BOC", yuan(150_000))
    issuance.issue(ledger, "i-3", "ICBC", yuan(200_000))
    issuance.transfer_between_holdings(ledger, "t-1", "op:ICBC:float", "op:BOC:float",
                                       yuan(50_000))
    issuance.redeem(ledger, "d-1", "BOC", yuan(20_000))
    posted = issuance.issue(ledger, "i-4", "BOC", yuan(100_000))
    assert posted.seq == 8
    report = run_audit(ledger)
    assert report.ok, report.findings
    assert report.entries_checked == 8
    return ledger


@contextmanager
def tampering(database_url: str) -> Iterator[Execute]:
    """A raw DB-API connection with the append-only guards dropped and foreign keys off, in one
    transaction that commits at the end: what an intruder with the database password can do."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        lite = sqlite3.connect(url.database, isolation_level=None)  # foreign keys off by default
        try:
            lite.execute("BEGIN IMMEDIATE")
            for table in ("journal_entries", "postings"):
                for action in ("update", "delete"):
                    lite.execute(f"DROP TRIGGER {table}_append_only_{action}")
            yield lambda sql: lite.execute(sql).fetchall()
            lite.execute("COMMIT")
        finally:
            lite.close()
        return
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    ) as pg:
        for table in ("journal_entries", "postings"):
            pg.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        pg.execute("SET session_replication_role = replica")  # foreign-key triggers off too

        def execute(sql: str) -> list[tuple[Any, ...]]:
            cursor = pg.execute(sql)
            return cursor.fetchall() if cursor.description else []

        yield execute


def cli_audit(database_url: str) -> tuple[int, list[dict[str, Any]], str]:
    """``cbdc audit`` twice: as JSON (for exact findings) and as the table a human reads."""
    runner = CliRunner()
    as_json = runner.invoke(app, ["audit", "--database-url", database_url, "--json"])
    as_table = runner.invoke(app, ["audit", "--database-url", database_url])
    assert as_json.exit_code == as_table.exit_code, as_table.output
    findings = json.loads(as_json.stdout)["findings"]
    return as_json.exit_code, findings, " ".join(as_table.stdout.split())


def by_code(report: AuditReport) -> dict[str, list[Finding]]:
    found: dict[str, list[Finding]] = {}
    for finding in report.findings:
        found.setdefault(finding.code, []).append(finding)
    return found


def assert_cli_names(database_url: str, report: AuditReport, *subjects: str) -> None:
    """The command exits 1 with the same findings as the function, and its table names them."""
    exit_code, findings, table = cli_audit(database_url)
    assert exit_code == 1
    assert findings == [finding.as_dict() for finding in report.findings]
    assert "AUDIT FAILED" in table
    for subject in subjects:
        assert subject in table, (subject, table)


def seq_of(execute: Execute, entry_id: str) -> int:
    ((seq,),) = execute(f"SELECT seq FROM journal_entries WHERE entry_id = '{entry_id}'")
    return int(seq)


def test_a_clean_ledger_passes_the_cli_audit(books: LedgerContext, database_url: str) -> None:
    exit_code, findings, table = cli_audit(database_url)
    assert (exit_code, findings) == (0, [])
    assert "AUDIT PASSED" in table


def test_changed_posting_amount_is_named(books: LedgerContext, database_url: str) -> None:
    with tampering(database_url) as execute:
        seq = seq_of(execute, "i-3")
        execute(f"UPDATE postings SET amount_fen = amount_fen + 1 "
                f"WHERE entry_seq = {seq} AND amount_fen > 0")

    report = run_audit(books)
    found = by_code(report)
    assert [f.subject for f in found["entry_hash_mismatch"]] == ["entry 5 (i-3)"]
    (unbalanced,) = found["entry_unbalanced"]
    assert (unbalanced.subject, unbalanced.amount_fen) == ("entry 5 (i-3)", 1)
    (drift,) = found["balance_drift"]
    assert (drift.subject, drift.amount_fen) == ("account op:ICBC:float", -1)
    assert set(found) <= {"entry_hash_mismatch", "entry_unbalanced", "balance_drift",
                          "issuance_counter_mismatch"}
    assert_cli_names(database_url, report, "entry 5 (i-3)", "account op:ICBC:float")


def test_rewritten_metadata_text_is_named_even_when_it_means_the_same(
    books: LedgerContext, database_url: str
) -> None:
    """The stored metadata is hashed as written: re-spacing it (same JSON object) is an
    alteration too, and so is changing what it says."""
    with tampering(database_url) as execute:
        execute("UPDATE journal_entries SET metadata_json = "
                "REPLACE(metadata_json, '\"operator\":', '\"operator\": ') "
                "WHERE entry_id = 'i-2'")
        (text,) = execute("SELECT metadata_json FROM journal_entries WHERE entry_id = 'i-2'")[0]
        assert '"operator": ' in text
    found = by_code(run_audit(books))
    assert [f.subject for f in found["entry_hash_mismatch"]] == ["entry 4 (i-2)"]
    assert set(found) == {"entry_hash_mismatch"}


def test_deleted_entry_is_named(books: LedgerContext, database_url: str) -> None:
    with tampering(database_url) as execute:
        seq = seq_of(execute, "i-2")
        execute(f"DELETE FROM postings WHERE entry_seq = {seq}")
        execute(f"DELETE FROM journal_entries WHERE seq = {seq}")

    report = run_audit(books)
    found = by_code(report)
    (missing,) = found["entry_missing"]
    assert missing.subject == "entry 4"
    assert "1 entry missing before entry 5 (i-3)" in missing.detail
    assert [f.subject for f in found["chain_broken"]] == ["entry 5 (i-3)"]
    drifts = {f.subject: f.amount_fen for f in found["balance_drift"]}
    # The cached balances still hold the deleted issue of 150,000 CNY; the journal no longer does.
    assert drifts == {"account op:BOC:reserve": -yuan(150_000),
                      "account op:BOC:float": yuan(150_000)}
    (counter,) = found["issuance_counter_mismatch"]
    assert (counter.subject, counter.amount_fen) == ("operator BOC", yuan(150_000))
    assert report.entries_checked == 7
    assert_cli_names(database_url, report, "entry 4", "entry 5 (i-3)", "account op:BOC:float")


def test_drifted_cached_balance_is_named(books: LedgerContext, database_url: str) -> None:
    with tampering(database_url) as execute:
        execute("UPDATE accounts SET balance_fen = balance_fen + 7 WHERE code = 'op:BOC:float'")

    report = run_audit(books)
    assert report.findings == [
        Finding("balance_drift", "account op:BOC:float",
                f"cached balance {yuan(280_000) + 7} fen, postings sum to {yuan(280_000)} fen",
                amount_fen=7)
    ]
    assert_cli_names(database_url, report, "account op:BOC:float")


def test_forged_entry_with_a_self_consistent_hash_breaks_the_next_link(
    books: LedgerContext, database_url: str
) -> None:
    """Rewrite the transfer as 60,000 instead of 50,000 and re-hash it with the real formula:
    the entry itself now checks out, but the next entry no longer links to it."""
    with books.read() as connection:
        row = connection.execute(
            select(journal_entries).where(journal_entries.c.entry_id == "t-1")
        ).one()
        legs = connection.execute(
            select(postings.c.account_id, postings.c.amount_fen)
            .where(postings.c.entry_seq == row.seq).order_by(postings.c.id)
        ).all()
    forged = [Posting(account, amount // 5 * 6) for account, amount in legs]
    created_at = row.created_at  # naive (but UTC) from SQLite
    created_at = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at
    forged_hash = entry_hash(
        prev_hash=row.prev_hash, seq=row.seq, entry_id=row.entry_id, kind=row.kind,
        created_at=created_at, metadata=json.loads(row.metadata_json), postings=forged,
    )
    with tampering(database_url) as execute:
        execute(f"UPDATE postings SET amount_fen = amount_fen / 5 * 6 WHERE entry_seq = {row.seq}")
        execute(f"UPDATE journal_entries SET entry_hash = '{forged_hash}' WHERE seq = {row.seq}")

    report = run_audit(books)
    found = by_code(report)
    assert "entry_hash_mismatch" not in found, "the forgery is self-consistent"
    assert "entry_unbalanced" not in found
    assert [f.subject for f in found["chain_broken"]] == ["entry 7 (d-1)"]
    assert {f.subject: f.amount_fen for f in found["balance_drift"]} == {
        "account op:ICBC:float": yuan(10_000),
        "account op:BOC:float": -yuan(10_000),
    }
    assert_cli_names(database_url, report, "entry 7 (d-1)", "account op:ICBC:float")


def test_swapped_entries_are_named(books: LedgerContext, database_url: str) -> None:
    """Swap the places of two ICBC issues in the chain (seq 3 and 5), postings and all: every
    balance still adds up, only the chain shows it."""
    with tampering(database_url) as execute:
        parked = 1_000_000
        for statement in (
            f"UPDATE journal_entries SET seq = {parked} WHERE seq = 3",
            "UPDATE journal_entries SET seq = 3 WHERE seq = 5",
            f"UPDATE journal_entries SET seq = 5 WHERE seq = {parked}",
            "UPDATE postings SET entry_seq = CASE entry_seq WHEN 3 THEN 5 ELSE 3 END "
            "WHERE entry_seq IN (3, 5)",
        ):
            execute(statement)

    report = run_audit(books)
    found = by_code(report)
    assert [f.subject for f in found["entry_hash_mismatch"]] == ["entry 3 (i-3)", "entry 5 (i-1)"]
    assert [f.subject for f in found["chain_broken"]] == [
        "entry 3 (i-3)", "entry 4 (i-2)", "entry 5 (i-1)", "entry 6 (t-1)",
    ]
    assert set(found) == {"entry_hash_mismatch", "chain_broken"}, "balances still add up"
    assert_cli_names(database_url, report, "entry 3 (i-3)", "entry 5 (i-1)")
