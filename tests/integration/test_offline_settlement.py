"""Offline payments settled by the ledger, on both engines: worked examples read as accounting
scenarios, then duplicates, order, forgeries, expiry, revocation, unloads and reconciliation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from cbdc.domain.errors import CbdcError
from cbdc.domain.money import yuan
from cbdc.offline import SecureElement
from cbdc.offline.messages import OFFLINE_PAYMENT, message_hash
from cbdc.services import offline, offline_uploads, verifier
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.funding import withdraw
from cbdc.storage.tables import journal_entries
from tests.offline_helpers import OfflineLedger, signed_outside
from tests.wallet_helpers import float_balance


@pytest.fixture
def world(ledger: LedgerContext) -> OfflineLedger:
    return OfflineLedger(ledger)


def digest(envelope: dict[str, object]) -> str:
    return message_hash(OFFLINE_PAYMENT, envelope["message"])  # type: ignore[arg-type]


def audit_ok(ledger: LedgerContext) -> None:
    report = run_audit(ledger)
    assert report.ok, report.findings


def test_two_devices_pay_each_other_five_times_then_sync_in_reverse_order(
    world: OfflineLedger,
) -> None:
    world.wallet("w-alice")
    world.wallet("w-bob")
    alice = world.device("alice-phone", "w-alice")
    bob = world.device("bob-card", "w-bob")
    world.load(alice, yuan(500))
    world.load(bob, yuan(200))
    assert (world.balance("w-alice"), world.balance("w-bob")) == (yuan(1_500), yuan(1_800))
    assert (world.escrow("alice-phone"), world.escrow("bob-card")) == (yuan(500), yuan(200))

    rounds = [(alice, bob, yuan(30)), (bob, alice, yuan(20)), (alice, bob, 4_550),
              (bob, alice, yuan(10)), (alice, bob, yuan(100))]
    payments = []
    for payer, payee, amount in rounds:
        world.tick()
        payments.append(world.pay(payer, payee, amount))

    # Offline, nothing moved on the ledger. Bob syncs first, then Alice, each uploading what it
    # holds (made and received) newest first: every payment arrives twice.
    bob_report = world.upload(bob, list(reversed(world.holdings(bob))))
    assert {o.status for o in bob_report.outcomes} == {"settled"}
    alice_report = world.upload(alice, list(reversed(world.holdings(alice))))
    assert {o.status for o in alice_report.outcomes} == {"settled"}
    assert all(o.duplicate for o in alice_report.outcomes)

    for payment in payments:
        assert world.times_paid(digest(payment)) == 1
    alice_paid, bob_paid = yuan(30) + 4_550 + yuan(100), yuan(20) + yuan(10)
    assert world.balance("w-alice") == yuan(1_500) + bob_paid
    assert world.balance("w-bob") == yuan(1_800) + alice_paid
    # What is left in each escrow is exactly what each device still holds offline.
    assert world.escrow("alice-phone") == yuan(500) - alice_paid == alice.state().balance_fen
    assert world.escrow("bob-card") == yuan(200) - bob_paid == bob.state().balance_fen
    for device in (alice, bob):
        assert device.pending_received() == ()
        assert device.state().payments_since_sync == 0
    assert offline.fraud_cases(world.ledger) == []
    audit_ok(world.ledger)


def test_a_cloned_card_spends_the_same_300_yuan_at_two_merchants(world: OfflineLedger) -> None:
    world.wallet("w-carol")
    world.wallet("w-noodles", funds_yuan=0)
    world.wallet("w-tea", funds_yuan=0)
    card = world.device("carol-card", "w-carol")
    noodle_till = world.device("noodles-till", "w-noodles")
    tea_till = world.device("tea-till", "w-tea")
    world.load(card, yuan(300))
    clone = card.clone()
    float_before = float_balance(world.ledger)

    world.tick()
    first = world.pay(card, noodle_till, yuan(300))
    second = world.pay(clone, tea_till, yuan(300))  # the same counter 1, other content
    assert first["message"]["counter"] == second["message"]["counter"] == 1

    noodles = world.upload(noodle_till)
    assert [o.status for o in noodles.outcomes] == ["settled"]
    assert noodles.revoked == ()
    tea = world.upload(tea_till)
    assert [o.status for o in tea.outcomes] == ["operator_paid"]
    assert tea.revoked == ("carol-card",)

    # Both honest merchants are paid: the noodle shop from Carol's escrow, the tea shop by the
    # operator that certified the card, in an explicit operator_loss entry.
    assert world.balance("w-noodles") == world.balance("w-tea") == yuan(300)
    assert world.escrow("carol-card") == 0
    assert float_balance(world.ledger) == float_before - yuan(300)
    with world.ledger.read() as connection:
        losses = connection.execute(
            select(func.count()).select_from(journal_entries)
            .where(journal_entries.c.kind == "operator_loss")
        ).scalar_one()
    assert losses == 1
    (case,) = offline.fraud_cases(world.ledger, operator="BANK-A")
    assert (case.device_id, case.wallet_id, case.code) == ("carol-card", "w-carol",
                                                          "offline_double_spend")
    assert case.counters == (1,) and case.amount_fen == yuan(600)
    assert sorted(case.payment_hashes) == sorted([digest(first), digest(second)])
    # The card is on the published list, which the tea till installed when it synced.
    assert "dev:carol-card" in tea.revocation_list["message"]["revoked"]  # type: ignore[index]
    assert "dev:carol-card" in offline.revocation_list(world.ledger)["message"]["revoked"]
    assert tea_till.state().revocation_number == 1
    with pytest.raises(CbdcError) as refused:
        world.load(card, yuan(10))
    assert refused.value.code == "offline_device_revoked"
    report = offline.offline_report(world.ledger, stale_after=timedelta(days=1))
    assert report.ok
    (bank,) = report.operators
    assert (bank.fraud_cases, bank.losses_fen) == (1, yuan(300))
    audit_ok(world.ledger)


def test_uploads_duplicated_in_any_order_by_either_side_settle_once(
    world: OfflineLedger,
) -> None:
    world.wallet("w-dan")
    world.wallet("w-shop", funds_yuan=0)
    dan = world.device("dan-watch", "w-dan")
    shop = world.device("shop-till", "w-shop")
    world.load(dan, yuan(400))
    payments = [world.pay(dan, shop, amount) for amount in (yuan(50), yuan(70), yuan(80))]
    third, first = payments[2], payments[0]

    world.upload(shop, [third, third])  # the third, twice, before the others: not overspent
    world.upload(dan, [payments[1], first, third])
    world.upload(shop)
    world.upload(dan)
    for payment in payments:
        assert world.times_paid(digest(payment)) == 1
    assert world.balance("w-shop") == yuan(200)
    assert world.escrow("dan-watch") == yuan(200) == dan.state().balance_fen
    assert dan.state().synced_counter == 3
    assert offline.fraud_cases(world.ledger) == []
    audit_ok(world.ledger)


def test_forged_and_altered_payments_are_refused_and_pay_nothing(world: OfflineLedger) -> None:
    erin, shop = world.card_and_till("erin", "shop", yuan(100))
    genuine = world.pay(erin, shop, yuan(10))
    altered = {**genuine, "message": {**genuine["message"], "amount_fen": yuan(100)}}
    report = world.upload(shop, [altered, {"message": "garbage"}, genuine])
    assert [(o.status, o.code) for o in report.outcomes] == [
        ("refused", "signature_invalid"), ("refused", "envelope_invalid"), ("settled", None)
    ]
    assert world.balance("w-shop") == yuan(10)
    (case,) = offline.fraud_cases(world.ledger)
    assert (case.device_id, case.code, case.amount_fen) == ("erin-card", "offline_forged",
                                                           yuan(100))
    # A forgery names the device it claims but proves nothing against its key: not revoked.
    assert report.revoked == ()
    world.load(erin, yuan(10))
    audit_ok(world.ledger)


def test_payments_signed_after_the_certificate_expired_are_not_paid(
    world: OfflineLedger,
) -> None:
    world.wallet("w-fay")
    world.wallet("w-shop", funds_yuan=0)
    fay = world.device("fay-card", "w-fay", valid_for=timedelta(days=2))
    shop = world.device("shop-till", "w-shop")
    world.load(fay, yuan(100))
    world.tick(3 * 24 * 60)
    late = signed_outside(world.ledger, fay, payee_device="shop-till", payee_wallet="w-shop",
                          amount_fen=yuan(40))
    report = world.upload(shop, [late])
    assert [(o.status, o.code) for o in report.outcomes] == [("unpaid", "certificate_expired")]
    assert report.revoked == ("fay-card",)
    assert world.balance("w-shop") == 0 and world.escrow("fay-card") == yuan(100)
    assert {case.code for case in offline.fraud_cases(world.ledger)} == {"certificate_expired"}
    audit_ok(world.ledger)


def test_a_payee_whose_list_predated_the_revocation_is_paid_one_that_knew_is_not(
    world: OfflineLedger,
) -> None:
    for wallet in ("w-gus", "w-one", "w-two", "w-three"):
        world.wallet(wallet, funds_yuan=100 if wallet == "w-gus" else 0)
    gus = world.device("gus-card", "w-gus")
    one, two, three = (world.device(name, wallet) for name, wallet in
                       (("till-one", "w-one"), ("till-two", "w-two"), ("till-three", "w-three")))
    world.load(gus, yuan(100))
    clone = gus.clone()
    world.pay(gus, one, yuan(10))
    world.pay(clone, two, yuan(10))
    world.upload(one)
    world.upload(two)  # double spend: gus-card revoked; till-two now holds the list
    assert two.state().revocation_number == 1
    # Gus's card, not yet told, pays till-three (whose list predates the revocation) and a
    # payment is pushed onto till-two past its own device's check.
    world.pay(gus, three, yuan(20))
    to_two = signed_outside(world.ledger, gus, payee_device="till-two", payee_wallet="w-two",
                            amount_fen=yuan(5))
    with pytest.raises(CbdcError) as refused:
        two.receive(to_two, world.ledger.now())
    assert refused.value.code == "certificate_revoked"
    three_report = world.upload(three)
    two_report = world.upload(two, [to_two])
    assert [o.status for o in three_report.outcomes] == ["settled"]
    assert [(o.status, o.code) for o in two_report.outcomes] == [("unpaid", "certificate_revoked")]
    assert world.balance("w-three") == yuan(20)
    audit_ok(world.ledger)


def test_unload_returns_the_balance_and_a_late_payment_after_it_is_caught(
    world: OfflineLedger,
) -> None:
    world.wallet("w-hana")
    world.wallet("w-shop", funds_yuan=0)
    world.wallet("w-cafe", funds_yuan=0)
    hana = world.device("hana-card", "w-hana")
    shop = world.device("shop-till", "w-shop")
    cafe = world.device("cafe-till", "w-cafe")
    world.load(hana, yuan(500))
    world.pay(hana, shop, yuan(100))
    clone = hana.clone()
    statement = hana.unload(world.ledger.now())
    result = offline.unload_device(world.ledger, statement)
    assert (result.amount_fen, result.returned_fen) == (yuan(400), yuan(400))
    assert offline.unload_device(world.ledger, statement).replayed
    assert world.balance("w-hana") == yuan(1_500) + yuan(400)
    assert world.escrow("hana-card") == yuan(100)  # still owed to the shop
    assert [o.status for o in world.upload(shop).outcomes] == ["settled"]

    # The clone, copied before the unload, spends from the load the unload closed.
    world.tick()
    late = world.pay(clone, cafe, yuan(200))
    report = world.upload(cafe)
    assert [o.status for o in report.outcomes] == ["operator_paid"]
    assert report.revoked == ("hana-card",)
    assert world.times_paid(digest(late)) == 1
    assert {c.code for c in offline.fraud_cases(world.ledger)} == {"offline_after_unload"}
    assert world.escrow("hana-card") == 0
    audit_ok(world.ledger)


def test_a_payee_at_its_balance_cap_waits_until_it_has_room(world: OfflineLedger) -> None:
    world.wallet("w-ivy")
    world.wallet("w-kiosk", wallet_class=4, funds_yuan=9_950)  # cap 10,000 CNY, no bank
    ivy = world.device("ivy-card", "w-ivy")
    kiosk = world.device("kiosk-till", "w-kiosk")
    world.load(ivy, yuan(100))
    payment = world.pay(ivy, kiosk, yuan(80))
    report = world.upload(kiosk)
    assert [(o.status, o.code) for o in report.outcomes] == [
        ("pending", "balance_limit_exceeded")
    ]
    assert kiosk.pending_received() != ()
    pending = offline.offline_report(world.ledger, stale_after=timedelta(days=1))
    assert pending.operators[0].pending_fen == yuan(80)
    withdraw(world.ledger, "kiosk-withdraw", "w-kiosk", yuan(1_000))
    report = world.upload(kiosk)
    assert [o.status for o in report.outcomes] == ["settled"]
    assert world.times_paid(digest(payment)) == 1
    assert kiosk.pending_received() == ()
    audit_ok(world.ledger)


def test_loads_are_idempotent_and_bounded_by_the_offline_cap(world: OfflineLedger) -> None:
    world.wallet("w-jo")
    jo = world.device("jo-card", "w-jo")
    receipt = offline.load_device(world.ledger, "load-a", "jo-card", yuan(300))
    assert offline.load_device(world.ledger, "load-a", "jo-card", yuan(300)) == receipt
    jo.apply_load(receipt)
    for load_id, amount, code in (("load-a", yuan(200), "offline_load_conflict"),
                                  ("load-b", yuan(201), "offline_balance_cap_exceeded")):
        with pytest.raises(CbdcError) as refused:
            offline.load_device(world.ledger, load_id, "jo-card", amount)
        assert refused.value.code == code
    assert world.balance("w-jo") == yuan(1_700)
    audit_ok(world.ledger)


def test_reconciliation_flags_devices_that_have_not_synced(world: OfflineLedger) -> None:
    world.wallet("w-kim")
    world.wallet("w-lee")
    kim = world.device("kim-card", "w-kim")
    lee = world.device("lee-card", "w-lee")
    world.load(kim, yuan(50))
    world.tick(60 * 24 * 3)
    world.upload(lee)
    report = offline.offline_report(world.ledger, stale_after=timedelta(days=2))
    assert [d.device_id for d in report.stale] == ["kim-card"]
    assert report.ok
    (bank,) = report.operators
    assert (bank.devices, bank.outstanding_fen, bank.stale_devices) == (2, yuan(50),
                                                                        ("kim-card",))
    assert kim.state().balance_fen == yuan(50)


def test_large_uploads_are_authenticated_on_worker_processes(
    world: OfflineLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline_uploads, "PARALLEL_VERIFY_MIN", 4)
    monkeypatch.setattr(offline_uploads, "VERIFY_CHUNK", 2)
    monkeypatch.setattr(verifier, "WORKER_MIN", 2)
    world.wallet("w-max")
    world.wallet("w-shop", funds_yuan=0)
    payers: list[SecureElement] = [world.device(f"max-{n}", "w-max") for n in range(3)]
    shop = world.device("shop-till", "w-shop")
    for payer in payers:
        world.load(payer, yuan(20))
        world.pay(payer, shop, yuan(5))
        world.pay(payer, shop, yuan(6))
    forged = dict(world.holdings(shop)[0], signature="00" * 64)
    report = world.upload(shop, [*world.holdings(shop), forged])
    assert [o.status for o in report.outcomes] == ["settled"] * 6 + ["refused"]
    assert world.balance("w-shop") == yuan(33)
    audit_ok(world.ledger)
