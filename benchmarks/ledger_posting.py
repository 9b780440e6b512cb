"""Posted journal entries per second on SQLite: one entry per transaction, and batches of 100 and
1,000, next to a raw ``sqlite3`` baseline running the same statements (insert the entry, insert
its two postings, update two balances, move the chain head) in the same run."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from datetime import UTC, datetime

from sqlalchemy import insert

from benchmarks.common import Row, fresh_sqlite, print_rows, rate
from cbdc.clock import ManualClock
from cbdc.domain.postings import transfer
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.storage.journal import post_entries
from cbdc.storage.tables import accounts

ACCOUNTS = 100
FUNDING_FEN = 10**12
ENTRIES_PER_RUN = {1: 2_000, 100: 20_000, 1_000: 30_000}


def _setup() -> tuple[LedgerContext, list[int]]:
    context = open_ledger(fresh_sqlite(), clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
    with context.write() as connection:
        ids = [
            connection.execute(
                insert(accounts)
                .values(code=f"bench:{n}", kind="float", institution_id=1,
                        balance_fen=FUNDING_FEN if n else 0, created_at=context.now())
                .returning(accounts.c.id)
            ).scalar_one()
            for n in range(ACCOUNTS)
        ]
    return context, ids


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def ours(batch: int) -> float:
    context, ids = _setup()
    pick = random.Random(7)
    counter = _Counter()

    def run() -> int:
        total = ENTRIES_PER_RUN[batch]
        for _ in range(total // batch):
            drafts = []
            for _ in range(batch):
                debit, credit = pick.sample(ids[1:], 2)
                drafts.append(transfer(f"bench-{counter.next()}", "transfer",
                                       debit_account_id=debit, credit_account_id=credit,
                                       amount_fen=pick.randint(1, 50_000)))
            with context.write() as connection:
                post_entries(connection, drafts, now=context.now())
        return total

    try:
        return rate(run)
    finally:
        context.dispose()


def raw_baseline(batch: int) -> float:
    url = fresh_sqlite()
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("INSERT INTO institutions (code, name, kind, created_at) "
                       "VALUES ('central-bank', 'cb', 'central_bank', '2026-01-01')")
    connection.executemany(
        "INSERT INTO accounts (id, code, kind, institution_id, balance_fen, created_at) "
        "VALUES (?, ?, 'float', 1, ?, '2026-01-01')",
        [(n + 1, f"bench:{n}", FUNDING_FEN) for n in range(ACCOUNTS)],
    )
    pick = random.Random(7)
    state = {"seq": 0}
    hash_text = "0" * 64

    def run() -> int:
        total = ENTRIES_PER_RUN[batch]
        for _ in range(total // batch):
            entries, legs, balances = [], [], []
            for _ in range(batch):
                state["seq"] += 1
                seq = state["seq"]
                debit, credit = pick.sample(range(2, ACCOUNTS + 1), 2)
                amount = pick.randint(1, 50_000)
                # Realistic values: hashes are random, so their index inserts cost the same.
                digest = hashlib.sha256(seq.to_bytes(8, "big")).hexdigest()
                entries.append((seq, f"raw-{seq}", "transfer", "2026-01-01 00:00:00.000000",
                                "{}", digest, hash_text, digest))
                legs += [(seq, debit, -amount), (seq, credit, amount)]
                balances += [(-amount, debit), (amount, credit)]
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO journal_entries (seq, entry_id, kind, created_at, metadata_json, "
                "content_hash, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", entries)
            connection.executemany(
                "INSERT INTO postings (entry_seq, account_id, amount_fen) VALUES (?, ?, ?)", legs)
            connection.executemany(
                "UPDATE accounts SET balance_fen = balance_fen + ? WHERE id = ?", balances)
            connection.execute("UPDATE ledger_head SET last_seq = ?, last_hash = ? WHERE id = 1",
                               (state["seq"], hash_text))
            connection.execute("COMMIT")
        return total

    try:
        return rate(run)
    finally:
        connection.close()


def main() -> list[Row]:
    rows = [
        Row(f"cbdc post_entries, {batch} per transaction", ours(batch),
            f"raw sqlite3, {batch} per tx", raw_baseline(batch),
            goal=0.5 if batch > 1 else None)
        for batch in (1, 100, 1_000)
    ]
    print_rows("Ledger postings on SQLite (entries per second)", rows)
    return rows


if __name__ == "__main__":
    main()
