"""The secure element's own rules: loads, unloads, certificates, revocation lists, syncs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta

import pytest

from cbdc.domain.errors import (
    CbdcError,
    CertificateRefused,
    InvalidSignature,
    LoadRefused,
    OfflineRefused,
    RevocationListRefused,
    SyncRefused,
)
from cbdc.domain.money import yuan
from cbdc.offline import DEFAULT_OFFLINE_CAPS, OfflineCaps, SecureElement, offline_caps_for
from cbdc.offline.messages import OFFLINE_PAYMENT, message_hash
from tests.unit.offline.world import T0, World


def test_default_caps_follow_the_domain_brief() -> None:
    for wallet_class in (1, 2, 3):
        assert offline_caps_for(wallet_class) == OfflineCaps(yuan(500), yuan(500), 10)
    assert offline_caps_for(4) == OfflineCaps(yuan(200), yuan(100), 5)
    assert set(DEFAULT_OFFLINE_CAPS) == {1, 2, 3, 4}
    with pytest.raises(CbdcError):
        offline_caps_for(5)
    with pytest.raises(ValueError):
        OfflineCaps(yuan(100), yuan(200), 3)


def test_a_load_receipt_is_applied_once_and_in_order() -> None:
    world = World()
    card = world.device("card")
    first = world.load_receipt(card, yuan(100))
    second = world.load_receipt(card, yuan(50))
    with pytest.raises(LoadRefused) as caught:
        card.apply_load(second)
    assert caught.value.code == "load_out_of_order"
    card.apply_load(first)
    with pytest.raises(LoadRefused) as caught:
        card.apply_load(first)
    assert caught.value.code == "load_replayed"
    card.apply_load(second)
    assert card.state().balance_fen == yuan(150)
    assert card.state().load_counter == 2 and card.state().loaded_fen_total == yuan(150)


def test_a_load_receipt_for_another_device_or_altered_is_refused() -> None:
    world = World()
    card = world.device("card")
    other = world.device("other")
    receipt = world.load_receipt(other, yuan(100))
    with pytest.raises(LoadRefused) as caught:
        card.apply_load(receipt)
    assert caught.value.code == "load_wrong_device"
    altered = world.load_receipt(card, yuan(1))
    altered["message"]["amount_fen"] = yuan(500)
    with pytest.raises(InvalidSignature):
        card.apply_load(altered)
    assert card.state().balance_fen == 0


def test_a_load_receipt_signed_by_another_operator_is_refused() -> None:
    world = World()
    card = world.device("card")
    forged = world.operator("bank-b").sign_load_receipt(
        load_id="x", device_id="card", wallet="w-card", amount_fen=yuan(100), load_counter=1,
        created_at=world.now,
    )
    with pytest.raises(InvalidSignature):
        card.apply_load(forged)


def test_loading_above_the_offline_balance_cap_is_refused() -> None:
    world = World()
    card = world.device("anon", wallet_class=4)
    world.load(card, yuan(150))
    with pytest.raises(OfflineRefused) as caught:
        world.load(card, yuan(51))
    assert caught.value.code == "offline_balance_cap_exceeded"
    assert card.state().balance_fen == yuan(150) and card.state().load_counter == 1


def test_an_uncertified_device_does_nothing() -> None:
    world = World()
    blank = world.device("blank")
    blank._certificate = None  # a device fresh from the factory
    actions: tuple[Callable[[], object], ...] = (
        lambda: blank.unload(world.now), lambda: blank.pay("x", "w-x", 1, world.now))
    for action in actions:
        with pytest.raises(OfflineRefused) as caught:
            action()
        assert caught.value.code == "offline_device_uncertified"


def test_unload_zeroes_the_balance_and_pay_needs_a_new_load() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(200))
    card.pay("shop", "w-shop", yuan(50), world.tick())
    statement = world.unload(card)["message"]
    assert statement["amount_fen"] == yuan(150)
    assert statement["loaded_fen_total"] == yuan(200)
    assert statement["paid_fen_total"] == yuan(50)
    assert statement["unload_counter"] == 1 and statement["load_counter"] == 1
    assert statement["last_payment_hash"] == card.state().last_payment_hash
    with pytest.raises(OfflineRefused) as caught:
        card.pay("shop", "w-shop", 1, world.tick())
    assert caught.value.code == "offline_balance_insufficient"
    assert card.state().unloaded_fen_total == yuan(150)


def test_paying_itself_or_a_bad_amount_is_refused() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(10))
    with pytest.raises(OfflineRefused) as caught:
        card.pay("card", "w-card", 100, world.now)
    assert caught.value.code == "offline_self_payment"
    for amount in (0, -5, 1.5, True):
        with pytest.raises(CbdcError) as refused:
            card.pay("shop", "w-shop", amount, world.now)  # type: ignore[arg-type]
        assert refused.value.code == "amount_invalid"
    assert card.state().counter == 0 and card.state().balance_fen == yuan(10)


def test_ten_payments_then_the_device_must_sync() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(500))
    for _ in range(10):
        card.pay("shop", "w-shop", yuan(1), world.tick())
    with pytest.raises(OfflineRefused) as caught:
        card.pay("shop", "w-shop", yuan(1), world.tick())
    assert caught.value.code == "offline_payments_exhausted"
    receipt = world.operator().sign_sync_receipt(
        sync_id="s1", device_id="card", synced_counter=10, settled=set(), created_at=world.now
    )
    card.sync_done(receipt)
    card.sync_done(receipt)  # a replay changes nothing
    assert card.state().payments_since_sync == 0
    envelope = card.pay("shop", "w-shop", yuan(1), world.tick())
    assert envelope["message"]["payments_since_sync"] == 1
    assert envelope["message"]["counter"] == 11


def test_sync_receipts_that_do_not_fit_are_refused() -> None:
    world = World()
    card = world.device("card")
    ahead = world.operator().sign_sync_receipt(
        sync_id="s1", device_id="card", synced_counter=3, settled=set(), created_at=world.now
    )
    with pytest.raises(SyncRefused):
        card.sync_done(ahead)
    other = world.operator().sign_sync_receipt(
        sync_id="s2", device_id="other", synced_counter=0, settled=set(), created_at=world.now
    )
    with pytest.raises(SyncRefused):
        card.sync_done(other)
    forged = world.operator("bank-b").sign_sync_receipt(
        sync_id="s3", device_id="card", synced_counter=0, settled=set(), created_at=world.now
    )
    with pytest.raises(InvalidSignature):
        card.sync_done(forged)


def _sync(world: World, element: SecureElement, synced_counter: int,
          settled: set[str]) -> None:
    element.sync_done(world.operator().sign_sync_receipt(
        sync_id=f"sync-{element.device_id}-{world.tick():%Y%m%d%H%M}",
        device_id=element.device_id, synced_counter=synced_counter, settled=settled,
        created_at=world.now,
    ))


def test_a_sync_receipt_makes_the_card_forget_the_payments_the_ledger_holds() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(500))
    made = [card.pay("shop", "w-shop", yuan(10), world.tick()) for _ in range(4)]
    assert list(card.payments_made()) == made

    # The ledger holds counters 1-2 only (3 was lost in transit): the card keeps 3 and 4.
    _sync(world, card, 2, set())
    assert list(card.payments_made()) == made[2:]
    assert card.state().payments_since_sync == 2
    _sync(world, card, 4, set())
    assert card.payments_made() == ()

    # What it forgot changes nothing it still knows: it pays on from counter 5, chained.
    following = card.pay("shop", "w-shop", yuan(10), world.tick())
    assert following["message"]["counter"] == 5
    assert following["message"]["prev_hash"] == message_hash(OFFLINE_PAYMENT, made[-1]["message"])
    assert card.payments_made() == (following,)
    assert card.state().paid_fen_total == yuan(50) and card.state().balance_fen == yuan(450)


def test_a_till_forgets_what_the_ledger_settled_and_still_refuses_its_replay() -> None:
    world = World()
    card = world.device("card")
    till = world.device("till")
    world.load(card, yuan(500))
    first, second = (card.pay("till", "w-till", yuan(amount), world.tick())
                     for amount in (30, 70))
    paid = [till.receive(envelope, world.tick()) for envelope in (first, second)]
    assert till.state().pending_fen == yuan(100)

    # The ledger settled the first only: the till holds (and will upload again) the second.
    _sync(world, till, 0, {paid[0].payment_hash})
    assert till.payments_received() == till.pending_received() == (paid[1],)
    assert till.state().pending_fen == yuan(70)

    _sync(world, till, 0, {paid[1].payment_hash})
    assert till.payments_received() == () and till.state().pending_fen == 0
    for envelope in (first, second):  # forgotten, yet a replay is still recognised
        with pytest.raises(OfflineRefused) as caught:
            till.receive(envelope, world.tick())
        assert caught.value.code == "offline_counter_replayed"
    assert till.payments_received() == ()


def test_what_a_device_holds_does_not_grow_with_the_payments_it_syncs() -> None:
    world = World()
    card = world.device("card", caps=OfflineCaps(yuan(500), yuan(500), 3))
    till = world.device("till")
    for _ in range(40):  # 120 payments, three between syncs
        world.load(card, yuan(3))
        for _ in range(3):
            till.receive(card.pay("till", "w-till", yuan(1), world.tick()), world.tick())
        assert len(card.payments_made()) == len(till.payments_received()) == 3
        _sync(world, card, card.state().counter, set())
        _sync(world, till, 0, {payment.payment_hash for payment in till.payments_received()})
        assert card.payments_made() == () and till.payments_received() == ()
    assert card.state().counter == 120 and card.state().paid_fen_total == yuan(120)


def test_revocation_lists_only_move_forward() -> None:
    world = World()
    card = world.device("card")
    first = world.revoke(1, "dev-x")
    second = world.revoke(2, "dev-x", "dev-y")
    assert card.install_revocation_list(second).number == 2
    assert card.install_revocation_list(second).number == 2  # idempotent
    with pytest.raises(RevocationListRefused) as caught:
        card.install_revocation_list(first)
    assert caught.value.code == "revocation_list_stale"
    conflicting = world.revoke(2, "dev-z")
    with pytest.raises(RevocationListRefused):
        card.install_revocation_list(conflicting)
    assert card.state().revocation_number == 2
    assert card.state().revocation_issued_at == world.now
    altered = world.revoke(3, "dev-x")
    altered["message"]["revoked"] = []
    with pytest.raises(InvalidSignature):
        card.install_revocation_list(altered)


def test_devices_handed_the_same_revocation_list_share_one_verified_copy() -> None:
    world = World()
    card, till = world.device("card"), world.device("till")
    envelope = world.revoke(1, "dev-x", "dev-y")
    snapshot = card.install_revocation_list(envelope)
    # Each device is handed its own copy over the wire; one snapshot serves them all.
    assert till.install_revocation_list(copy.deepcopy(envelope)) is snapshot
    assert snapshot.revoked == {"dev-x", "dev-y"}

    # Changing the list after it was verified changes neither the shared snapshot nor what a
    # device accepts: the altered list is verified in full, and its signature fails.
    envelope["message"]["revoked"].remove("dev-y")
    assert snapshot.revoked == {"dev-x", "dev-y"}
    assert snapshot.envelope is not None and snapshot.envelope["message"]["revoked"] == [
        "dev-x", "dev-y"]
    with pytest.raises(InvalidSignature):
        world.device("kiosk").install_revocation_list(envelope)


def test_a_revoked_device_refuses_to_pay() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(10))
    card.install_revocation_list(world.revoke(1, "dev-card"))
    with pytest.raises(CertificateRefused) as caught:
        card.pay("shop", "w-shop", 100, world.now)
    assert caught.value.code == "certificate_revoked"


def test_certificate_install_and_renewal() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(300))
    operator = world.operator()
    renewal = operator.certify_device(
        serial="dev-card-2", device_id="card", device_public_key=card.public_key,
        wallet="w-card", wallet_class=2, not_before=T0, not_after=T0 + timedelta(days=700),
    )
    card.install_certificate(renewal, operator.certificate, world.now)
    assert card.certificate == renewal
    smaller = operator.certify_device(
        serial="dev-card-3", device_id="card", device_public_key=card.public_key,
        wallet="w-card", wallet_class=4, not_before=T0, not_after=T0 + timedelta(days=700),
    )
    with pytest.raises(OfflineRefused) as caught:
        card.install_certificate(smaller, operator.certificate, world.now)
    assert caught.value.code == "offline_balance_cap_exceeded"
    other_key = world.device("other")
    foreign = operator.certify_device(
        serial="dev-z", device_id="card", device_public_key=other_key.public_key,
        wallet="w-card", wallet_class=2, not_before=T0, not_after=T0 + timedelta(days=1),
    )
    with pytest.raises(CertificateRefused) as refused:
        card.install_certificate(foreign, operator.certificate, world.now)
    assert refused.value.code == "certificate_mismatch"
    moved = operator.certify_device(
        serial="dev-card-4", device_id="card", device_public_key=card.public_key,
        wallet="w-elsewhere", wallet_class=2, not_before=T0, not_after=T0 + timedelta(days=1),
    )
    with pytest.raises(CertificateRefused) as refused:
        card.install_certificate(moved, operator.certificate, world.now)
    assert refused.value.code == "certificate_mismatch"
    assert card.certificate == renewal


def test_the_private_key_is_not_exposed() -> None:
    world = World()
    card = world.device("card")
    public_names = [name for name in dir(card) if not name.startswith("_")]
    assert not [n for n in public_names if "signing" in n or "seed" in n or "private" in n]
    assert set(public_names) >= {"public_key", "pay", "receive", "unload", "apply_load"}
