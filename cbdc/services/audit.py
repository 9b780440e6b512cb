"""The audit: an independent re-check of the whole ledger from its journal.

It streams the journal in seq order, in pages (keyset pagination), so its memory grows with the
number of accounts, never with the length of the journal. For every entry it re-computes the
hash and checks the chain link and that its postings sum to zero; then it compares every cached
balance with the sum of its postings, looks for negative balances, and checks supply:

* e-CNY in circulation (issued minus redeemed, from the journal's ``issue``/``redeem`` entries)
  equals the sum of all holdings (operator floats, wallets, escrows), in total and against each
  operator's issuance counters;
* the chain head row agrees with the last entry (so deleting the newest entry is seen too).

Each finding names the exact entry or account and the amount that is wrong (like GNU Taler's
auditor), with a stable ``code``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, select

from cbdc.domain.postings import GENESIS_HASH, Posting, entry_hash
from cbdc.services.context import LedgerContext
from cbdc.storage.tables import accounts, institutions, journal_entries, ledger_head, postings

HOLDING_KINDS = ("float", "wallet", "escrow")
PAGE_SIZE = 2_000


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    subject: str
    detail: str
    amount_fen: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "subject": self.subject,
            "detail": self.detail,
            "amount_fen": self.amount_fen,
        }


@dataclass
class AuditReport:
    entries_checked: int = 0
    accounts_checked: int = 0
    ecny_outstanding_fen: int = 0
    holdings_fen: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries_checked": self.entries_checked,
            "accounts_checked": self.accounts_checked,
            "ecny_outstanding_fen": self.ecny_outstanding_fen,
            "holdings_fen": self.holdings_fen,
            "findings": [finding.as_dict() for finding in self.findings],
        }


@dataclass
class _Streamed:
    """What the journal pass accumulates: per-account sums and per-operator issuance."""

    account_sums: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    issued: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    redeemed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_seq: int = 0
    last_hash: str = GENESIS_HASH


def run_audit(
    context: LedgerContext, *, progress: Callable[[int], None] | None = None
) -> AuditReport:
    """Audit the ledger in one consistent read snapshot."""
    report = AuditReport()
    with context.read() as connection:
        streamed = _check_journal(connection, report, progress)
        _check_head(connection, streamed, report)
        _check_accounts(connection, streamed, report)
        _check_supply(connection, streamed, report)
    return report


def _pages(connection: Connection) -> Iterator[Sequence[Any]]:
    after = 0
    while True:
        rows = connection.execute(
            select(journal_entries)
            .where(journal_entries.c.seq > after)
            .order_by(journal_entries.c.seq)
            .limit(PAGE_SIZE)
        ).all()
        if not rows:
            return
        yield rows
        after = rows[-1].seq


def _postings_of(connection: Connection, first: int, last: int) -> dict[int, list[Posting]]:
    by_entry: dict[int, list[Posting]] = defaultdict(list)
    for row in connection.execute(
        select(postings.c.entry_seq, postings.c.account_id, postings.c.amount_fen)
        .where(postings.c.entry_seq.between(first, last))
        .order_by(postings.c.entry_seq, postings.c.id)
    ):
        by_entry[row.entry_seq].append(Posting(row.account_id, row.amount_fen))
    return by_entry


def _check_journal(
    connection: Connection, report: AuditReport, progress: Callable[[int], None] | None
) -> _Streamed:
    streamed = _Streamed()
    for page in _pages(connection):
        legs = _postings_of(connection, page[0].seq, page[-1].seq)
        for row in page:
            _check_entry(row, legs.get(row.seq, []), streamed, report)
        report.entries_checked += len(page)
        if progress is not None:
            progress(len(page))
    return streamed


def _check_entry(row: Any, legs: list[Posting], streamed: _Streamed, report: AuditReport) -> None:
    subject = f"entry {row.seq} ({row.entry_id})"
    if row.seq != streamed.last_seq + 1:
        missing = row.seq - streamed.last_seq - 1
        report.findings.append(
            Finding("entry_missing", f"entry {streamed.last_seq + 1}",
                    f"{missing} entr{'y' if missing == 1 else 'ies'} missing before {subject}")
        )
    if row.prev_hash != streamed.last_hash:
        report.findings.append(
            Finding("chain_broken", subject,
                    f"prev_hash {row.prev_hash[:16]}... does not link to the entry before it "
                    f"({streamed.last_hash[:16]}...)")
        )
    created_at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    # The stored metadata text is hashed as it is: it was written canonical, so any change to
    # it, even one that parses to the same object, is a change to the entry.
    recomputed = entry_hash(
        prev_hash=row.prev_hash, seq=row.seq, entry_id=row.entry_id, kind=row.kind,
        created_at=created_at, metadata_json=row.metadata_json, postings=legs,
    )
    if recomputed != row.entry_hash:
        report.findings.append(
            Finding("entry_hash_mismatch", subject,
                    "the entry's content does not match its recorded hash (altered)")
        )
    total = sum(leg.amount_fen for leg in legs)
    if total != 0 or len(legs) < 2:
        report.findings.append(
            Finding("entry_unbalanced", subject,
                    f"{len(legs)} postings summing to {total} fen", amount_fen=total)
        )
    for leg in legs:
        streamed.account_sums[leg.account_id] += leg.amount_fen
    streamed.last_seq = row.seq
    streamed.last_hash = row.entry_hash
    if row.kind in ("issue", "redeem"):
        operator = json.loads(row.metadata_json).get("operator")
        if isinstance(operator, str):
            moved = sum(leg.amount_fen for leg in legs if leg.amount_fen > 0)
            (streamed.issued if row.kind == "issue" else streamed.redeemed)[operator] += moved


def _check_head(connection: Connection, streamed: _Streamed, report: AuditReport) -> None:
    head = connection.execute(select(ledger_head).where(ledger_head.c.id == 1)).one()
    if head.last_seq != streamed.last_seq or head.last_hash != streamed.last_hash:
        report.findings.append(
            Finding("head_mismatch", f"entry {head.last_seq}",
                    f"the chain head names entry {head.last_seq} but the journal ends at "
                    f"entry {streamed.last_seq}")
        )


def _check_accounts(connection: Connection, streamed: _Streamed, report: AuditReport) -> None:
    for row in connection.execute(
        select(accounts.c.id, accounts.c.code, accounts.c.kind, accounts.c.balance_fen)
        .order_by(accounts.c.id)
    ):
        report.accounts_checked += 1
        computed = streamed.account_sums.get(row.id, 0)
        if row.balance_fen != computed:
            report.findings.append(
                Finding("balance_drift", f"account {row.code}",
                        f"cached balance {row.balance_fen} fen, postings sum to {computed} fen",
                        amount_fen=row.balance_fen - computed)
            )
        if row.kind != "issuance" and min(row.balance_fen, computed) < 0:
            report.findings.append(
                Finding("balance_negative", f"account {row.code}",
                        "a non-issuance account is negative",
                        amount_fen=min(row.balance_fen, computed))
            )
        if row.kind in HOLDING_KINDS:
            report.holdings_fen += computed


def _check_supply(connection: Connection, streamed: _Streamed, report: AuditReport) -> None:
    outstanding = sum(streamed.issued.values()) - sum(streamed.redeemed.values())
    report.ecny_outstanding_fen = outstanding
    if outstanding != report.holdings_fen:
        report.findings.append(
            Finding("supply_mismatch", "e-CNY supply",
                    f"issued minus redeemed is {outstanding} fen but holdings sum to "
                    f"{report.holdings_fen} fen", amount_fen=report.holdings_fen - outstanding)
        )
    for row in connection.execute(
        select(institutions.c.code, institutions.c.issued_fen, institutions.c.redeemed_fen)
        .where(institutions.c.kind == "operator")
        .order_by(institutions.c.code)
    ):
        journal_issued = streamed.issued.get(row.code, 0)
        journal_redeemed = streamed.redeemed.get(row.code, 0)
        if (row.issued_fen, row.redeemed_fen) != (journal_issued, journal_redeemed):
            report.findings.append(
                Finding("issuance_counter_mismatch", f"operator {row.code}",
                        f"counters say issued {row.issued_fen} / redeemed {row.redeemed_fen} "
                        f"fen, the journal says {journal_issued} / {journal_redeemed} fen",
                        amount_fen=(row.issued_fen - row.redeemed_fen)
                        - (journal_issued - journal_redeemed))
            )
