"""Worked examples of offline payments, read as accounting scenarios."""

from __future__ import annotations

from cbdc.domain.money import parse_yuan, yuan
from cbdc.offline import FindingCode
from tests.unit.offline.world import World


def test_two_devices_pay_each_other_five_times_offline_then_sync() -> None:
    world = World()
    alice = world.device("alice")
    bob = world.device("bob")
    world.load(alice, yuan(500))
    world.load(bob, yuan(200))

    # (payer, payee, amount): alternating, all offline.
    rounds = [
        (alice, bob, yuan(30)),
        (bob, alice, yuan(20)),
        (alice, bob, parse_yuan("45.50")),
        (bob, alice, yuan(10)),
        (alice, bob, yuan(100)),
    ]
    for payer, payee, amount in rounds:
        envelope = payer.pay(payee.device_id, f"w-{payee.device_id}", amount, world.tick())
        payee.receive(envelope, world.tick())

    # Spending lowers the offline balance; receiving never raises it: it is pending.
    assert alice.state().balance_fen == yuan(500) - yuan(30) - parse_yuan("45.50") - yuan(100)
    assert alice.state().balance_fen == parse_yuan("324.50")
    assert bob.state().balance_fen == yuan(200) - yuan(20) - yuan(10) == yuan(170)
    assert alice.state().pending_fen == yuan(30)
    assert bob.state().pending_fen == parse_yuan("175.50")
    assert [alice.state().counter, bob.state().counter] == [3, 2]
    assert alice.state().payments_since_sync == 3

    # The ledger re-verifies both devices' uploads: nothing to report, every payment honest.
    for device in (alice, bob):
        verdict = world.classify(device.device_id, list(device.payments_made()))
        assert verdict.findings == ()
        assert len(verdict.honest) == device.state().counter
        assert verdict.honest_paid_fen == device.state().paid_fen_total
        assert verdict.escrow_fen - verdict.honest_paid_fen == device.state().balance_fen

    assert len(alice.payments_received()) == 2 and len(bob.payments_received()) == 3

    # Each device syncs: its payments are acknowledged and what it received is settled.
    for device in (alice, bob):
        operator = world.operator()
        receipt = operator.sign_sync_receipt(
            sync_id=f"sync-{device.device_id}-1",
            device_id=device.device_id,
            synced_counter=device.state().counter,
            settled={p.payment_hash for p in device.pending_received()},
            created_at=world.tick(),
        )
        device.sync_done(receipt)
        assert device.pending_received() == ()
        assert device.state().payments_since_sync == 0
        assert device.state().pending_fen == 0
        # The ledger now holds all of them: the device forgets them (its storage is bounded).
        assert device.payments_made() == () and device.payments_received() == ()


def test_a_cloned_card_spends_the_same_300_yuan_at_two_merchants() -> None:
    world = World()
    card = world.device("card-7")
    tea_shop = world.device("tea-shop", wallet_class=1)
    bakery = world.device("bakery", wallet_class=1)
    world.load(card, yuan(300))

    # An attacker extracts the secure element: same key, same counter, same 300 yuan.
    clone = card.clone()
    assert clone.public_key == card.public_key and clone.state() == card.state()

    genuine = card.pay("tea-shop", "w-tea-shop", yuan(300), world.tick())
    copied = clone.pay("bakery", "w-bakery", yuan(300), world.tick())

    # Offline, neither merchant can tell: both accept, each holds 300 yuan pending.
    tea_shop.receive(genuine, world.tick())
    bakery.receive(copied, world.tick())
    assert tea_shop.state().pending_fen == bakery.state().pending_fen == yuan(300)
    assert card.state().balance_fen == clone.state().balance_fen == 0

    # The ledger, collecting both merchants' uploads, names the clone: one counter, two contents.
    verdict = world.classify("card-7", [genuine, copied])
    assert verdict.codes() == {"offline_double_spend"}
    (finding,) = verdict.of(FindingCode.DOUBLE_SPEND)
    assert finding.device_id == "card-7"
    assert finding.counters == (1,)
    assert finding.amount_fen == yuan(600)
    assert len(set(finding.payment_hashes)) == 2
    assert verdict.honest == ()
    assert verdict.escrow_fen == yuan(300)


def test_unload_returns_the_unspent_balance_and_closes_the_counters() -> None:
    world = World()
    card = world.device("card-1")
    shop = world.device("shop")
    world.load(card, yuan(500))
    shop.receive(card.pay("shop", "w-shop", yuan(120), world.tick()), world.tick())

    statement = world.unload(card)

    assert statement["message"]["amount_fen"] == yuan(380)
    assert statement["message"]["counter"] == 1
    assert statement["message"]["paid_fen_total"] == yuan(120)
    assert card.state().balance_fen == 0
    verdict = world.classify("card-1", list(card.payments_made()))
    assert verdict.findings == ()
    assert verdict.escrow_fen == yuan(120) == verdict.honest_paid_fen

    # After a new load the device pays on with later counters; the ledger still sees no fraud.
    world.load(card, yuan(50))
    shop.receive(card.pay("shop", "w-shop", yuan(50), world.tick()), world.tick())
    verdict = world.classify("card-1", list(card.payments_made()))
    assert verdict.findings == ()
    assert [p.counter for p in verdict.honest] == [1, 2]
