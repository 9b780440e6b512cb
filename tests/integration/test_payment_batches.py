"""A batch answers each payment exactly as settling them one by one would, in one transaction.

Two ledgers start identical; one settles a random stream of payments (valid, over caps, short of
funds, replayed, reused sequences, conflicting ids, unknown wallets) one at a time, the other in
batches. Every answer (settlement or error code) and every final balance must agree, and both
ledgers must pass the audit."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from cbdc.client import Envelope
from cbdc.clock import ManualClock
from cbdc.domain.errors import CbdcError
from cbdc.domain.money import yuan
from cbdc.services import payments as payments_service
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.services.funding import top_up
from cbdc.services.payments import (
    MerchantRefund,
    Settlement,
    settle_batch,
    settle_payment,
    settle_payments,
)
from cbdc.storage import payments as payments_storage
from cbdc.storage.tables import accounts, journal_entries
from tests.conftest import ENGINES, START_OF_TESTS, fresh_database
from tests.wallet_helpers import Holder, funded_operator, new_wallet

WALLET_CLASSES = (4, 4, 3, 2, 1, 4)


@pytest.fixture(params=ENGINES)
def twin_ledgers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LedgerContext, LedgerContext]]:
    databases = [fresh_database(request.param, request, tmp_path) for _ in range(2)]
    contexts = [
        open_ledger(next(database), clock=ManualClock(START_OF_TESTS)) for database in databases
    ]
    yield contexts[0], contexts[1]
    for context, database in zip(contexts, databases, strict=True):
        context.dispose()
        next(database, None)


def _populate(ledger: LedgerContext) -> list[Holder]:
    funded_operator(ledger)
    holders = []
    for n, wallet_class in enumerate(WALLET_CLASSES):
        wallet_id = f"w{n}"
        new_wallet(ledger, wallet_id, wallet_class, phone=f"+86138000001{n:02d}",
                   reverse_waterfall=wallet_class <= 2)
        top_up(ledger, f"top-up-{n}", wallet_id, yuan(300 * (n + 1)))
        holders.append(Holder(ledger, wallet_id))
    return holders


def _stream(holders: list[Holder], pick: random.Random, count: int) -> list[Envelope]:
    """Payments of every kind of outcome; the same stream is built for both ledgers."""
    stream: list[Envelope] = []
    for n in range(count):
        payer, payee = pick.sample(range(len(holders)), 2)
        amount = pick.choice([yuan(1), yuan(50), yuan(400), yuan(2_500), yuan(6_000)])
        roll = pick.random()
        if roll < 0.1 and stream:
            stream.append(pick.choice(stream))  # replay of an earlier envelope
            continue
        payment_id = f"p{n}" if roll > 0.15 or n == 0 else f"p{n - 1}"  # id reused: conflict
        envelope = holders[payer].payment(f"w{payee}", amount, payment_id)
        if roll > 0.95:
            envelope = holders[payer].payment("w-nobody", amount, f"p{n}-nobody")
        if 0.15 < roll < 0.2:
            holders[payer].sequence = type(holders[payer].sequence)(
                holders[payer].sequence.last_sequence - 1)  # the next one reuses a sequence
        stream.append(envelope)
    return stream


def _answer(result: Settlement | CbdcError) -> tuple[Any, ...]:
    if isinstance(result, CbdcError):
        return ("refused", result.code)
    return ("settled", result.payment_id, result.amount_fen, result.topped_up_fen,
            result.swept_fen, result.replayed)


def _balances(ledger: LedgerContext) -> dict[str, int]:
    with ledger.read() as connection:
        return dict(connection.execute(select(accounts.c.code, accounts.c.balance_fen)).all())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_answer_like_one_by_one(
    twin_ledgers: tuple[LedgerContext, LedgerContext], seed: int
) -> None:
    alone, batched = twin_ledgers
    streams = []
    for ledger in (alone, batched):
        streams.append(_stream(_populate(ledger), random.Random(seed), 120))
    assert streams[0] == streams[1]  # same keys, same seeds: the very same envelopes

    one_by_one = []
    for envelope in streams[0]:
        try:
            one_by_one.append(_answer(settle_payment(alone, envelope)))
        except CbdcError as error:
            one_by_one.append(_answer(error))
    in_batches = []
    pick = random.Random(seed)
    position = 0
    while position < len(streams[1]):
        size = pick.randint(1, 40)
        in_batches += [_answer(r) for r in settle_payments(batched, streams[1][position:
                                                                              position + size])]
        position += size

    assert in_batches == one_by_one
    outcomes = {answer[0] for answer in one_by_one}
    assert outcomes == {"settled", "refused"}
    codes = {answer[1] for answer in one_by_one if answer[0] == "refused"}
    assert {"sequence_not_fresh", "wallet_not_found"} <= codes and len(codes) >= 4
    assert _balances(alone) == _balances(batched)
    assert run_audit(alone).ok and run_audit(batched).ok


def test_repeats_within_one_batch(ledger: LedgerContext) -> None:
    funded_operator(ledger)
    for n in range(3):
        new_wallet(ledger, f"w{n}", 2, phone=f"+86138000002{n:02d}")
        top_up(ledger, f"top-up-{n}", f"w{n}", yuan(100))
    alice, bob = Holder(ledger, "w0"), Holder(ledger, "w1")
    first = alice.payment("w1", yuan(10), "same-id")
    other = bob.payment("w2", yuan(10), "same-id")
    results = settle_payments(ledger, [first, first, other])
    settled, again, clash = results
    assert isinstance(settled, Settlement) and not settled.replayed
    assert isinstance(again, Settlement) and again.replayed
    assert again.receipt == settled.receipt
    assert isinstance(clash, CbdcError) and clash.code == "payment_conflict"
    assert _balances(ledger)["w:w0"] == yuan(90)
    assert _balances(ledger)["w:w2"] == yuan(100)


def test_forged_payments_in_a_batch_are_refused_first(ledger: LedgerContext) -> None:
    """Step 2 (signature) answers before step 3 and the ledger checks, also in big batches
    whose signatures are checked on the verifier process while the rest is checked
    optimistically."""
    alice, batch = _two_payers(ledger, 40)
    forged = dict(batch[10], message={**batch[10]["message"], "amount_fen": yuan(2)})
    elsewhere = alice.payment("w1", yuan(1), "p-other-ledger", ledger_id="another-ledger")
    forged_elsewhere = dict(elsewhere, signature=batch[11]["signature"])
    results = settle_payments(ledger, [*batch[:10], forged, *batch[11:], elsewhere,
                                       forged_elsewhere])
    codes = [r.code if isinstance(r, CbdcError) else "settled" for r in results]
    assert codes[10] == "signature_invalid"
    assert codes[-2:] == ["ledger_id_mismatch", "signature_invalid"]
    assert codes[:10] + codes[11:-2] == ["settled"] * 39
    assert _balances(ledger)["w:w1"] == yuan(1_000) + yuan(39)
    assert run_audit(ledger).ok


def _refuse_first_insert(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the first write of payment rows fail as a lost race would (a unique key taken by a
    concurrent unit of work), after the batch has posted its entries; the sizes written."""
    calls: list[int] = []
    real = payments_storage.insert_payments  # the function cbdc.services.payments imports

    def insert(connection: Connection, rows: list[Any]) -> dict[str, int]:
        calls.append(len(rows))
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO payments", {}, Exception("uq_payments_payment_id"))
        return real(connection, rows)

    monkeypatch.setattr(payments_service, "insert_payments", insert)
    return calls


def _two_payers(ledger: LedgerContext, count: int = 20) -> tuple[Holder, list[Envelope]]:
    """Wallets w0 and w1 with 1,000 CNY each; w0's holder and ``count`` payments of 1 CNY from
    w0 to w1 (p0, p1, ...)."""
    funded_operator(ledger)
    for n in range(2):
        new_wallet(ledger, f"w{n}", 2, phone=f"+86138000004{n:02d}")
        top_up(ledger, f"top-up-{n}", f"w{n}", yuan(1_000))
    alice = Holder(ledger, "w0")
    return alice, [alice.payment("w1", yuan(1), f"p{n}") for n in range(count)]


def _entry_count(ledger: LedgerContext) -> int:
    with ledger.read() as connection:
        return connection.execute(select(func.count()).select_from(journal_entries)).scalar_one()


def test_a_batch_refused_by_the_database_is_answered_one_by_one(
    ledger: LedgerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own unit of work is rolled back, entries and all, before each payment is settled
    alone: nothing is posted twice."""
    _, batch = _two_payers(ledger)
    entries_before = _entry_count(ledger)
    calls = _refuse_first_insert(monkeypatch)
    results = settle_payments(ledger, batch)
    assert all(isinstance(result, Settlement) for result in results)
    assert calls == [20] + [1] * 20
    assert _entry_count(ledger) == entries_before + 20
    assert _balances(ledger)["w:w1"] == yuan(1_020)
    assert run_audit(ledger).ok


def test_a_batch_refused_inside_the_callers_unit_of_work_undoes_the_whole_unit(
    ledger: LedgerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a unit of work the caller holds, the batch's entries were already written when
    the database refused its rows: settling each payment alone in that same unit would post
    them twice. The refusal goes to the caller, whose rollback undoes the batch, and the same
    payments settle once when sent again."""
    _, batch = _two_payers(ledger)
    entries_before, balances_before = _entry_count(ledger), _balances(ledger)
    calls = _refuse_first_insert(monkeypatch)
    with pytest.raises(IntegrityError), ledger.write():
        top_up(ledger, "top-up-in-the-unit", "w1", yuan(5))
        settle_payments(ledger, batch)
    assert calls == [20]
    assert (_entry_count(ledger), _balances(ledger)) == (entries_before, balances_before)
    results = settle_payments(ledger, batch)
    assert all(isinstance(result, Settlement) and not result.replayed for result in results)
    assert _balances(ledger)["w:w1"] == yuan(1_020)
    assert run_audit(ledger).ok


def test_a_batch_with_ids_of_the_wrong_type_refuses_those_and_settles_the_rest(
    ledger: LedgerContext,
) -> None:
    """Ids that are lists, objects or numbers (found by schemathesis: a list as a payment id
    crashed the batch with a TypeError) are refused as malformed; the others settle."""
    _, batch = _two_payers(ledger, 4)
    odd_ids: list[Any] = [["p-list"], {"id": "p-object"}, 7]
    malformed = [dict(envelope, message={**envelope["message"], "payment_id": odd})
                 for envelope, odd in zip(batch[1:], odd_ids, strict=True)]
    refund = MerchantRefund({"message": {"payment_id": ["p0"], "refund_id": {"r": 1}},
                             "signature": "00" * 64})
    entries_before = _entry_count(ledger)
    results = settle_batch(ledger, [batch[0], *malformed, refund])
    assert isinstance(results[0], Settlement) and not results[0].replayed
    codes = [r.code if isinstance(r, CbdcError) else "settled" for r in results[1:]]
    assert codes[:3] == ["field_invalid"] * 3
    assert codes[3] != "settled"
    assert _entry_count(ledger) == entries_before + 1
    assert _balances(ledger)["w:w1"] == yuan(1_000) + yuan(1)
    assert run_audit(ledger).ok
