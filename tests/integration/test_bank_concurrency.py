"""The bank test: many concurrent transfers over a few hot accounts, on SQLite and PostgreSQL.

Ten operators are funded by issuance; 8 workers, each on its own connection, make 500 random
transfers between their floats while a reader takes consistent snapshots. Money is neither
created nor lost: the total is exact in every snapshot and at the end, no balance goes negative,
every balance equals its opening balance plus the transfers that succeeded, and the journal holds
exactly the transfers that succeeded.

The second test gives the same workload to a naive read-check-write (no BEGIN IMMEDIATE, no
FOR UPDATE, absolute balance writes) with a barrier between the read and the write, and shows
that it loses updates: the bank test has teeth.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, func, select, update

from cbdc.domain.errors import InsufficientFunds
from cbdc.domain.money import yuan
from cbdc.services import issuance
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext, float_account_code
from cbdc.storage.engine import normalise_url
from cbdc.storage.tables import accounts, journal_entries

WORKERS = 8
TRANSFERS_PER_WORKER = 500
HOT_ACCOUNTS = 10
OPENING_FLOAT_FEN = yuan(100)
TOTAL_FEN = HOT_ACCOUNTS * OPENING_FLOAT_FEN
AMOUNT_FEN_MAX = yuan(30)  # large enough that balances run dry and refusals happen
SEED = 20260302
JOIN_TIMEOUT_S = 120
READER_PAUSE_S = 0.01
SWITCH_INTERVAL_S = 0.0002


@dataclass(frozen=True)
class Transfer:
    source: int  # index into the hot accounts
    destination: int
    amount_fen: int


def schedule(worker: int, count: int) -> list[Transfer]:
    """The random transfers of one worker, the same on every run."""
    rng = random.Random(SEED * 100 + worker)
    transfers = []
    for _ in range(count):
        source, destination = rng.sample(range(HOT_ACCOUNTS), 2)
        transfers.append(Transfer(source, destination, rng.randint(1, AMOUNT_FEN_MAX)))
    return transfers


def fund_hot_accounts(ledger: LedgerContext) -> list[str]:
    """Ten operators, each with OPENING_FLOAT_FEN of e-CNY issued into its float."""
    codes = []
    for number in range(HOT_ACCOUNTS):
        code = f"HOT-{number:02d}"
        issuance.create_operator(ledger, code, f"Hot bank {number}", quota_fen=OPENING_FLOAT_FEN)
        issuance.deposit_reserve(ledger, f"reserve-{code}", code, OPENING_FLOAT_FEN)
        issuance.issue(ledger, f"issue-{code}", code, OPENING_FLOAT_FEN)
        codes.append(float_account_code(code))
    return codes


def float_balances(ledger: LedgerContext, codes: list[str]) -> list[int]:
    with ledger.read() as connection:
        by_code = dict(
            connection.execute(
                select(accounts.c.code, accounts.c.balance_fen).where(accounts.c.code.in_(codes))
            ).all()
        )
    return [by_code[code] for code in codes]


@dataclass
class Outcome:
    """What the workers and the reader saw."""

    succeeded: list[Transfer] = field(default_factory=list)
    refused: int = 0
    errors: list[BaseException] = field(default_factory=list)
    snapshots: int = 0
    bad_snapshots: list[tuple[int, ...]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expected_balances(self) -> list[int]:
        balances = [OPENING_FLOAT_FEN] * HOT_ACCOUNTS
        for transfer in self.succeeded:
            balances[transfer.source] -= transfer.amount_fen
            balances[transfer.destination] += transfer.amount_fen
        return balances


def run_workers(
    make_transfer: Callable[[int, int, Transfer], bool],
    transfers_per_worker: int,
    reader: Callable[[threading.Event, Outcome], None] | None = None,
) -> Outcome:
    """Run WORKERS threads over their schedules; ``make_transfer(worker, n, transfer)`` returns
    whether the transfer was made (False: refused for insufficient funds)."""
    outcome = Outcome()
    done = threading.Event()

    def work(worker: int) -> None:
        try:
            for number, transfer in enumerate(schedule(worker, transfers_per_worker)):
                made = make_transfer(worker, number, transfer)
                with outcome.lock:
                    if made:
                        outcome.succeeded.append(transfer)
                    else:
                        outcome.refused += 1
        except BaseException as error:  # reported by the test
            outcome.errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(WORKERS)]
    switch_interval = sys.getswitchinterval()
    # The thread holding the chain head waits for the GIL after every round trip; with the
    # default 5 ms switch interval it waits behind every other worker (a lock convoy).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    watcher = None
    if reader is not None:
        watcher = threading.Thread(target=reader, args=(done, outcome))
        watcher.start()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    finally:
        done.set()
        if watcher is not None:
            watcher.join(JOIN_TIMEOUT_S)
        sys.setswitchinterval(switch_interval)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    return outcome


def test_concurrent_transfers_conserve_money(ledger: LedgerContext) -> None:
    codes = fund_hot_accounts(ledger)
    assert float_balances(ledger, codes) == [OPENING_FLOAT_FEN] * HOT_ACCOUNTS

    def make_transfer(worker: int, number: int, transfer: Transfer) -> bool:
        try:
            issuance.transfer_between_holdings(
                ledger, f"w{worker}-t{number:04d}", codes[transfer.source],
                codes[transfer.destination], transfer.amount_fen,
            )
        except InsufficientFunds:
            return False
        return True

    def reader(done: threading.Event, outcome: Outcome) -> None:
        try:
            while not done.is_set():
                # One statement per account inside one read transaction: only a real snapshot
                # makes these ten reads add up while transfers commit in between.
                with ledger.read() as connection:
                    balances = tuple(
                        connection.execute(
                            select(accounts.c.balance_fen).where(accounts.c.code == code)
                        ).scalar_one()
                        for code in codes
                    )
                outcome.snapshots += 1
                if sum(balances) != TOTAL_FEN or min(balances) < 0:
                    outcome.bad_snapshots.append(balances)
                done.wait(READER_PAUSE_S)  # leave the GIL to the workers between snapshots
        except BaseException as error:
            outcome.errors.append(error)

    outcome = run_workers(make_transfer, TRANSFERS_PER_WORKER, reader)

    assert outcome.errors == []
    assert len(outcome.succeeded) + outcome.refused == WORKERS * TRANSFERS_PER_WORKER
    assert outcome.refused > 0, "the workload should run some accounts dry"
    assert len(outcome.succeeded) > WORKERS * TRANSFERS_PER_WORKER // 2
    assert outcome.snapshots >= 10, "the reader should have looked during the run"
    assert outcome.bad_snapshots == []
    final = float_balances(ledger, codes)
    assert sum(final) == TOTAL_FEN
    assert min(final) >= 0
    assert final == outcome.expected_balances(), "an update was lost"
    with ledger.read() as connection:
        transfer_entries = connection.execute(
            select(func.count()).select_from(journal_entries)
            .where(journal_entries.c.kind == "transfer")
        ).scalar_one()
    assert transfer_entries == len(outcome.succeeded)
    report = run_audit(ledger)
    assert report.ok, [finding.as_dict() for finding in report.findings]
    assert report.holdings_fen == report.ecny_outstanding_fen == TOTAL_FEN


class NaiveBank:
    """What the ledger's locking prevents: read the balances in a plain transaction (pysqlite
    does not even BEGIN before a SELECT; PostgreSQL READ COMMITTED without FOR UPDATE), check,
    then write the absolute balances computed from that read."""

    def __init__(self, database_url: str, account_ids: list[int]) -> None:
        self.engine: Engine = create_engine(
            normalise_url(database_url), connect_args=_naive_connect_args(database_url)
        )
        self.account_ids = account_ids
        self.barrier = threading.Barrier(WORKERS, timeout=60)

    def transfer(self, worker: int, number: int, transfer: Transfer) -> bool:
        source, destination = (self.account_ids[i] for i in (transfer.source, transfer.destination))
        with self.engine.connect() as connection:
            balances = {
                account_id: connection.execute(
                    select(accounts.c.balance_fen).where(accounts.c.id == account_id)
                ).scalar_one()
                for account_id in (source, destination)
            }
            # Every worker has read before any of them writes: the race, made certain.
            self.barrier.wait()
            if balances[source] < transfer.amount_fen:
                connection.rollback()
                return False
            balances[source] -= transfer.amount_fen
            balances[destination] += transfer.amount_fen
            for account_id in sorted(balances):  # sorted: no deadlock, only lost updates
                connection.execute(
                    update(accounts).where(accounts.c.id == account_id)
                    .values(balance_fen=balances[account_id])
                )
            connection.commit()
        return True


def _naive_connect_args(database_url: str) -> dict[str, object]:
    return {"check_same_thread": False, "timeout": 30} if database_url.startswith("sqlite") else {}


NAIVE_TRANSFERS_PER_WORKER = 60


def test_without_locking_the_same_workload_loses_money(
    ledger: LedgerContext, database_url: str
) -> None:
    codes = fund_hot_accounts(ledger)
    with ledger.read() as connection:
        by_code = dict(
            connection.execute(
                select(accounts.c.code, accounts.c.id).where(accounts.c.code.in_(codes))
            ).all()
        )
    naive = NaiveBank(database_url, [by_code[code] for code in codes])
    try:
        outcome = run_workers(naive.transfer, NAIVE_TRANSFERS_PER_WORKER)
    finally:
        naive.engine.dispose()

    assert outcome.errors == []
    final = float_balances(ledger, codes)
    expected = outcome.expected_balances()
    lost = Counter(
        {codes[i]: final[i] - expected[i] for i in range(HOT_ACCOUNTS) if final[i] != expected[i]}
    )
    # Each round 8 workers touch 16 account slots over 10 accounts, so updates collide and the
    # later absolute write erases the earlier one.
    assert lost, "the naive read-check-write should have lost updates"
    # The audit sees it too: cached balances no longer match the journal (the naive code
    # wrote no entries).
    report = run_audit(ledger)
    assert not report.ok
    assert {finding.code for finding in report.findings} >= {"balance_drift"}
