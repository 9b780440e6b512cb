"""Signed payments on both engines: worked examples, limits across Shanghai midnight, waterfalls,
replays and forgeries, the documented order of checks, and races."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from cbdc.client import WalletKey, verify_receipt
from cbdc.domain import signing
from cbdc.domain.errors import CbdcError
from cbdc.domain.messages import PAYMENT
from cbdc.domain.money import yuan
from cbdc.domain.tiers import Limits
from cbdc.services import keys, wallets
from cbdc.services.audit import run_audit
from cbdc.services.context import ENV_LEDGER_ID, LedgerContext, open_ledger
from cbdc.services.funding import top_up
from cbdc.services.payments import (
    Settlement,
    answer_after_race,
    ledger_public_key_hex,
    settle_payment,
)
from cbdc.storage.tables import journal_entries
from tests.wallet_helpers import (
    Holder,
    evidence_for,
    float_balance,
    funded_operator,
    new_wallet,
    snapshot,
)


@pytest.fixture
def bank(ledger: LedgerContext) -> str:
    return funded_operator(ledger)


def balance(ledger: LedgerContext, wallet_id: str) -> int:
    return wallets.get_wallet(ledger, wallet_id).balance_fen


def refused(ledger: LedgerContext, code: str, attempt: Callable[[], Any]) -> CbdcError:
    """``attempt`` fails with ``code`` and leaves every balance, entry and row as it was."""
    before = snapshot(ledger)
    with pytest.raises(CbdcError) as error:
        attempt()
    assert error.value.code == code, error.value
    assert snapshot(ledger) == before
    return error.value


def test_a_payment_settles_with_a_ledger_signed_receipt(ledger: LedgerContext, bank: str) -> None:
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(500))
    alice = Holder(ledger, "w-alice")
    settlement = alice.pay("w-bob", yuan(120), "p-1", memo="noodles")
    assert (settlement.payer, settlement.payee, settlement.amount_fen) == (
        "w-alice", "w-bob", yuan(120)
    )
    assert (settlement.topped_up_fen, settlement.swept_fen, settlement.replayed) == (0, 0, False)
    receipt = verify_receipt(settlement.receipt, ledger_public_key_hex(ledger))
    assert receipt["receipt_for"] == "p-1"
    assert receipt["entry_seq"] == settlement.entry_seq
    assert receipt["entry_hash"] == settlement.entry_hash
    assert (balance(ledger, "w-alice"), balance(ledger, "w-bob")) == (yuan(380), yuan(120))
    spent = wallets.get_wallet(ledger, "w-alice").usage
    assert (spent.spent_day_fen, spent.spent_year_fen) == (yuan(120), yuan(120))
    assert keys.get_key(ledger, alice.key.public_key_hex).last_sequence == 1
    # The ledger keeps what Alice signed: anyone can re-verify her authorisation later.
    with ledger.read() as connection:
        stored, signature = connection.execute(
            text("SELECT message_json, signature FROM payments WHERE payment_id = 'p-1'")
        ).one()
    signing.verify(alice.key.public_key, PAYMENT, json.loads(stored), bytes.fromhex(signature))
    assert run_audit(ledger).ok


def test_worked_example_a_class_4_wallet_hits_its_daily_cap(
    ledger: LedgerContext, bank: str, clock: Any
) -> None:
    """Alice holds an anonymous class 4 wallet: 2,000 CNY a payment, 5,000 CNY a day."""
    clock.set(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))  # 10:00 in Shanghai
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-shop", 2, phone="+8613800000002", holder_kind="corporate",
               merchant_category_code="5411")
    top_up(ledger, "t-1", "w-alice", yuan(9_000))
    alice = Holder(ledger, "w-alice")

    refused(ledger, "single_payment_limit_exceeded",
            lambda: alice.pay("w-shop", yuan(2_000) + 1, "p-big"))
    alice.pay("w-shop", yuan(2_000), "p-1")
    alice.pay("w-shop", yuan(2_000), "p-2")
    alice.pay("w-shop", yuan(999), "p-3")
    assert wallets.get_wallet(ledger, "w-alice").usage.spent_day_fen == yuan(4_999)
    refused(ledger, "daily_limit_exceeded", lambda: alice.pay("w-shop", yuan(1) + 1, "p-4"))
    alice.pay("w-shop", yuan(1), "p-4")  # exactly at the cap
    refused(ledger, "daily_limit_exceeded", lambda: alice.pay("w-shop", 1, "p-5"))

    clock.set(datetime(2026, 3, 2, 15, 59, 59, tzinfo=UTC))  # 23:59:59 in Shanghai
    refused(ledger, "daily_limit_exceeded", lambda: alice.pay("w-shop", 1, "p-5"))
    clock.set(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))  # midnight in Shanghai: a new day
    alice.pay("w-shop", yuan(2_000), "p-5")
    usage = wallets.get_wallet(ledger, "w-alice").usage
    assert (usage.spent_day_fen, usage.spent_year_fen) == (yuan(2_000), yuan(7_000))
    assert balance(ledger, "w-alice") == yuan(2_000)
    assert balance(ledger, "w-shop") == yuan(7_000)
    assert run_audit(ledger).ok


def test_the_annual_cap_restarts_on_new_year_in_shanghai(
    ledger: LedgerContext, bank: str, clock: Any
) -> None:
    ledger.wallet_classes = ledger.wallet_classes.with_limits(
        4, Limits(yuan(10_000), yuan(2_000), yuan(5_000), yuan(3_000))
    )
    clock.set(datetime(2026, 12, 30, 4, 0, tzinfo=UTC))
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(5_000))
    alice = Holder(ledger, "w-alice")
    alice.pay("w-bob", yuan(2_000), "p-1")
    clock.advance(timedelta(days=1))  # 31 December
    refused(ledger, "annual_limit_exceeded", lambda: alice.pay("w-bob", yuan(1_001), "p-2"))
    alice.pay("w-bob", yuan(1_000), "p-2")
    clock.set(datetime(2026, 12, 31, 15, 59, tzinfo=UTC))
    refused(ledger, "annual_limit_exceeded", lambda: alice.pay("w-bob", 1, "p-3"))
    clock.set(datetime(2026, 12, 31, 16, 0, tzinfo=UTC))  # 1 January 2027 in Shanghai
    alice.pay("w-bob", yuan(2_000), "p-3")
    usage = wallets.get_wallet(ledger, "w-alice").usage
    assert (usage.year, usage.spent_year_fen) == (2027, yuan(2_000))


def test_worked_example_an_upgrade_to_class_2_and_a_reverse_waterfall(
    ledger: LedgerContext, bank: str
) -> None:
    """Alice, class 4 with 100 CNY, proves her identity and bank account, upgrades to class 2
    with the reverse waterfall on, and buys a 300 CNY jacket: her bank tops up the 200 short."""
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-shop", 2, phone="+8613800000002", holder_kind="corporate",
               merchant_category_code="5651")
    top_up(ledger, "t-1", "w-alice", yuan(100))
    alice = Holder(ledger, "w-alice")
    refused(ledger, "insufficient_funds", lambda: alice.pay("w-shop", yuan(300), "p-jacket"))

    wallets.change_class(ledger, "w-alice", 2, evidence=evidence_for(2), reverse_waterfall=True)
    float_before = float_balance(ledger)
    settlement = alice.pay("w-shop", yuan(300), "p-jacket")
    assert settlement.topped_up_fen == yuan(200)
    assert balance(ledger, "w-alice") == 0
    assert balance(ledger, "w-shop") == yuan(300)
    assert float_balance(ledger) == float_before - yuan(200)
    with ledger.read() as connection:
        kinds = connection.execute(
            select(journal_entries.c.kind).order_by(journal_entries.c.seq.desc()).limit(2)
        ).scalars().all()
    assert kinds == ["payment", "reverse_waterfall"]
    # The single-payment cap still applies to the whole payment, topped up or not.
    refused(ledger, "single_payment_limit_exceeded",
            lambda: alice.pay("w-shop", yuan(50_000) + 1, "p-car"))
    assert run_audit(ledger).ok


def test_waterfall_sweeps_the_excess_and_class_3_refuses_it(
    ledger: LedgerContext, bank: str
) -> None:
    funded_operator(ledger, "BANK-B")
    new_wallet(ledger, "w-payer", 1)
    top_up(ledger, "t-1", "w-payer", yuan(40_000))
    new_wallet(ledger, "w-rich", 2, operator="BANK-B", phone="+8613800000002")
    new_wallet(ledger, "w-modest", 3, operator="BANK-B", phone="+8613800000003")
    top_up(ledger, "t-2", "w-modest", yuan(19_000))
    ledger.wallet_classes = ledger.wallet_classes.with_limits(
        2, Limits(yuan(30_000), yuan(50_000), yuan(100_000), None)
    )
    payer = Holder(ledger, "w-payer")
    float_b = float_balance(ledger, "BANK-B")
    settlement = payer.pay("w-rich", yuan(35_000), "p-1")
    assert settlement.swept_fen == yuan(5_000)
    assert balance(ledger, "w-rich") == yuan(30_000)
    assert float_balance(ledger, "BANK-B") == float_b + yuan(5_000)
    error = refused(ledger, "balance_limit_exceeded",
                    lambda: payer.pay("w-modest", yuan(1_000) + 1, "p-2"))
    assert error.extra["limit_fen"] == yuan(20_000)
    payer.pay("w-modest", yuan(1_000), "p-2")
    assert balance(ledger, "w-modest") == yuan(20_000)
    assert run_audit(ledger).ok


def test_replays_forgeries_and_revoked_keys_are_refused(
    ledger: LedgerContext, bank: str
) -> None:
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(1_000))
    alice, bob = Holder(ledger, "w-alice"), Holder(ledger, "w-bob")
    envelope = alice.payment("w-bob", yuan(10), "p-1")
    first = settle_payment(ledger, envelope)

    again = settle_payment(ledger, envelope)
    assert again == replace(first, replayed=True)
    altered = alice.payment("w-bob", yuan(11), "p-1")
    refused(ledger, "payment_conflict", lambda: settle_payment(ledger, altered))
    replay = alice.key.seal({**envelope["message"], "payment_id": "p-1-again"})
    refused(ledger, "sequence_not_fresh", lambda: settle_payment(ledger, replay))
    forged = {**envelope, "message": {**envelope["message"], "amount_fen": yuan(999)}}
    refused(ledger, "signature_invalid", lambda: settle_payment(ledger, forged))
    stranger = WalletKey.derive(b"s" * 32, "stranger")
    unknown = stranger.seal({**alice.payment("w-bob", 1, "p-2")["message"],
                             "public_key": stranger.public_key_hex})
    refused(ledger, "public_key_not_enrolled", lambda: settle_payment(ledger, unknown))
    bobs_key = bob.key.seal({**alice.payment("w-bob", 1, "p-2")["message"],
                             "public_key": bob.key.public_key_hex})
    refused(ledger, "public_key_wallet_mismatch", lambda: settle_payment(ledger, bobs_key))
    other_ledger = alice.payment("w-bob", 1, "p-2", ledger_id="elsewhere")
    refused(ledger, "ledger_id_mismatch", lambda: settle_payment(ledger, other_ledger))
    to_self = alice.payment("w-alice", 1, "p-2")
    refused(ledger, "payee_invalid", lambda: settle_payment(ledger, to_self))
    to_nobody = alice.payment("w-nobody", 1, "p-2")
    refused(ledger, "wallet_not_found", lambda: settle_payment(ledger, to_nobody))

    signed_before_revocation = alice.payment("w-bob", 1, "p-3")
    keys.revoke_key(ledger, alice.key.public_key_hex)
    refused(ledger, "public_key_revoked", lambda: settle_payment(ledger, signed_before_revocation))
    # What settled before the revocation still answers with its first result.
    assert settle_payment(ledger, envelope) == replace(first, replayed=True)
    assert balance(ledger, "w-alice") == yuan(990)
    assert run_audit(ledger).ok


def test_the_same_bad_payment_always_gets_the_first_code_in_the_documented_order(
    ledger: LedgerContext, bank: str
) -> None:
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(10))
    alice = Holder(ledger, "w-alice")
    alice.pay("w-bob", yuan(1), "p-1")
    wallets.freeze(ledger, "w-bob")
    # Stale sequence, frozen payee, over the single cap, short of funds: the sequence wins.
    stale = alice.key.seal({**alice.payment("w-bob", yuan(3_000), "p-2")["message"],
                            "sequence": 1})
    for _ in range(2):
        refused(ledger, "sequence_not_fresh", lambda: settle_payment(ledger, stale))
    # Fresh sequence: the frozen payee comes before the caps and the funds.
    frozen = alice.payment("w-bob", yuan(3_000), "p-2")
    refused(ledger, "wallet_frozen", lambda: settle_payment(ledger, frozen))
    wallets.unfreeze(ledger, "w-bob")
    refused(ledger, "single_payment_limit_exceeded", lambda: settle_payment(ledger, frozen))
    refused(ledger, "insufficient_funds", lambda: alice.pay("w-bob", yuan(20), "p-3"))
    # A refused payment used no sequence: the same envelope settles once the money is there.
    later = alice.payment("w-bob", yuan(20), "p-4")
    refused(ledger, "insufficient_funds", lambda: settle_payment(ledger, later))
    top_up(ledger, "t-2", "w-alice", yuan(20))
    assert not settle_payment(ledger, later).replayed


def test_sub_wallet_pays_within_its_own_lower_caps(ledger: LedgerContext, bank: str) -> None:
    new_wallet(ledger, "w-shop", 2, holder_kind="corporate", merchant_category_code="5812")
    new_wallet(ledger, "w-supplier", 2, phone="+8613800000002", holder_kind="corporate")
    wallets.authorise_sub_wallet(ledger, "w-shop", "w-till",
                                 Limits(yuan(1_000), yuan(100), yuan(150), yuan(10_000)))
    top_up(ledger, "t-1", "w-till", yuan(500))
    till = Holder(ledger, "w-till")
    refused(ledger, "single_payment_limit_exceeded",
            lambda: till.pay("w-supplier", yuan(101), "p-1"))
    till.pay("w-supplier", yuan(100), "p-1")
    refused(ledger, "daily_limit_exceeded", lambda: till.pay("w-supplier", yuan(51), "p-2"))
    # No waterfall for a sub-wallet: it has no bank account of its own; over its cap is refused.
    top_up(ledger, "t-2", "w-supplier", yuan(700))
    supplier = Holder(ledger, "w-supplier")
    refused(ledger, "balance_limit_exceeded", lambda: supplier.pay("w-till", yuan(601), "p-3"))
    supplier.pay("w-till", yuan(600), "p-3")
    assert balance(ledger, "w-till") == yuan(1_000)


def _race(ledger: LedgerContext, envelopes: list[Any]) -> list[Settlement | CbdcError]:
    """Submit every envelope from its own thread, all released at once."""
    start = threading.Barrier(len(envelopes))

    def submit(envelope: Any) -> Settlement | CbdcError:
        start.wait()
        try:
            return settle_payment(ledger, envelope)
        except CbdcError as error:
            return error

    with ThreadPoolExecutor(max_workers=len(envelopes)) as pool:
        return list(pool.map(submit, envelopes))


def test_fifty_parallel_submissions_settle_once_even_after_a_restart(
    ledger: LedgerContext, bank: str, database_url: str, clock: Any
) -> None:
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(100))
    alice = Holder(ledger, "w-alice")
    envelope = alice.payment("w-bob", yuan(60), "p-race")

    results = _race(ledger, [envelope] * 50)
    settled = [r for r in results if isinstance(r, Settlement) and not r.replayed]
    assert len(settled) == 1
    assert all(
        isinstance(r, Settlement) and r.entry_seq == settled[0].entry_seq for r in results
    ), [r for r in results if not isinstance(r, Settlement)]
    assert (balance(ledger, "w-alice"), balance(ledger, "w-bob")) == (yuan(40), yuan(60))

    ledger.dispose()
    restarted = open_ledger(database_url, clock=clock)
    try:
        again = _race(restarted, [envelope] * 50)
        assert all(isinstance(r, Settlement) and r.replayed for r in again)
        # The same signature under fresh ids (a replay of the key's sequence): none settles.
        replays = [alice.key.seal({**envelope["message"], "payment_id": f"p-replay-{i}"})
                   for i in range(50)]
        refusals = _race(restarted, replays)
        assert all(isinstance(r, CbdcError) and r.code == "sequence_not_fresh"
                   for r in refusals), refusals
        assert (balance(restarted, "w-alice"), balance(restarted, "w-bob")) == (
            yuan(40), yuan(60)
        )
        assert run_audit(restarted).ok
    finally:
        restarted.dispose()


def test_fifty_devices_racing_for_one_balance(
    ledger: LedgerContext, bank: str
) -> None:
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(100))
    # Fifty devices of Alice's, each with its own key, each paying 30 CNY at the same instant.
    devices = [Holder(ledger, "w-alice", label=f"alice-device-{i}") for i in range(50)]
    envelopes = [device.payment("w-bob", yuan(30), f"p-{i}") for i, device in enumerate(devices)]
    results = _race(ledger, envelopes)
    settled = [r for r in results if isinstance(r, Settlement)]
    assert len(settled) == 3
    assert {r.code for r in results if isinstance(r, CbdcError)} == {"insufficient_funds"}
    assert (balance(ledger, "w-alice"), balance(ledger, "w-bob")) == (yuan(10), yuan(90))
    assert run_audit(ledger).ok


def test_the_database_refuses_a_second_use_of_a_key_sequence(
    ledger: LedgerContext, bank: str
) -> None:
    new_wallet(ledger, "w-alice")
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(100))
    Holder(ledger, "w-alice").pay("w-bob", yuan(1), "p-1")
    copy = (
        "INSERT INTO payments (payment_id, kind, payer_wallet_id, payee_wallet_id, amount_fen, "
        "key_id, sequence, message_json, message_hash, signature, entry_seq, receipt_json, "
        "settled_at) SELECT 'p-copy', kind, payer_wallet_id, payee_wallet_id, amount_fen, key_id, "
        "{sequence}, message_json, message_hash, signature, "
        "(SELECT seq FROM journal_entries WHERE entry_id = 't-1'), "
        "receipt_json, settled_at FROM payments WHERE payment_id = 'p-1'"
    )
    with pytest.raises(IntegrityError, match="sequence"), ledger.write() as connection:
        connection.execute(text(copy.format(sequence="sequence")))
    with ledger.write() as connection:  # the same row with the next sequence is accepted
        connection.execute(text(copy.format(sequence="sequence + 1")))


def test_a_reverse_waterfall_the_bank_cannot_fund_is_refused_without_revealing_its_float(
    ledger: LedgerContext, bank: str
) -> None:
    funded_operator(ledger, "BANK-S", float_yuan=1_000)
    new_wallet(ledger, "w-alice", 2, operator="BANK-S", reverse_waterfall=True)
    new_wallet(ledger, "w-bob", phone="+8613800000002")
    top_up(ledger, "t-1", "w-alice", yuan(1_000))  # the small bank's whole float
    alice = Holder(ledger, "w-alice")
    error = refused(ledger, "insufficient_funds", lambda: alice.pay("w-bob", yuan(1_500), "p-1"))
    assert error.extra == {"wallet": "w-alice", "shortfall_fen": yuan(500)}
    assert "float" not in error.detail


@pytest.mark.parametrize(("kind", "code"), [("payment", "sequence_not_fresh"),
                                            ("capture", "payment_code_used"),
                                            ("refund", "refund_conflict")])
def test_a_settlement_that_lost_a_race_and_is_not_recorded_is_told_what_collided(
    ledger: LedgerContext, kind: str, code: str
) -> None:
    """What answer_after_race tells a settlement whose row the database refused when the winner
    did not settle the same id: a payment's key sequence, a capture's code; a refund, which has
    neither, that its id is taken (for good: not a sequence it does not carry, nor "retry")."""
    with pytest.raises(CbdcError) as refused:
        answer_after_race(ledger, f"{kind}-lost", "0" * 64, kind)
    assert refused.value.code == code and refused.value.status == 409


def test_a_sub_wallet_sweep_may_not_take_a_ledger_entry_id(ledger: LedgerContext) -> None:
    with pytest.raises(CbdcError) as refused:
        wallets.close_sub_wallet(ledger, "refund:r-1", "w-parent", "w-sub")
    assert (refused.value.code, refused.value.extra["field"]) == ("entry_id_reserved", "entry_id")


def test_a_ledger_with_its_own_id_refuses_a_message_signed_for_another(
    database_url: str, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CBDC_LEDGER_ID: a payment signed for the default ledger id is ledger_id_mismatch at a
    ledger that has its own; one signed for its id settles."""
    monkeypatch.setenv(ENV_LEDGER_ID, "pilot-sz")
    ledger = open_ledger(database_url, clock=clock)
    try:
        assert ledger.ledger_id == "pilot-sz"
        funded_operator(ledger)
        new_wallet(ledger, "w-alice")
        new_wallet(ledger, "w-bob", phone="+8613800000002")
        top_up(ledger, "t-1", "w-alice", yuan(100))
        alice = Holder(ledger, "w-alice")
        elsewhere = alice.payment("w-bob", yuan(10), "p-elsewhere", ledger_id="cbdc-local")
        error = refused(ledger, "ledger_id_mismatch", lambda: settle_payment(ledger, elsewhere))
        assert error.extra["field"] == "ledger_id"
        assert alice.pay("w-bob", yuan(10), "p-here").amount_fen == yuan(10)
    finally:
        ledger.dispose()
