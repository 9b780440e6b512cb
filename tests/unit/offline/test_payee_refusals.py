"""Every refusal of a payee device, each with its stable code, and the payee's state untouched."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import nacl.signing
import pytest

from cbdc.domain import signing
from cbdc.domain.errors import (
    CbdcError,
    CertificateRefused,
    InvalidMessage,
    InvalidSignature,
    OfflineRefused,
)
from cbdc.domain.money import yuan
from cbdc.offline import (
    OfflineCaps,
    OperatorAuthority,
    OperatorCertificate,
    RootAuthority,
    SecureElement,
)
from cbdc.offline.messages import CERTIFICATE, OFFLINE_PAYMENT, format_time, seal
from cbdc.offline.verification import payment_envelope
from tests.unit.offline.world import (
    LEDGER_ID,
    T0,
    World,
    extracted_key_payment,
    seed,
    signing_key,
)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def card(world: World) -> SecureElement:
    element = world.device("card")
    world.load(element, yuan(500))
    return element


@pytest.fixture
def shop(world: World) -> SecureElement:
    return world.device("shop", wallet_class=1)


def refused_by(shop: SecureElement, envelope: Any, now: Any) -> CbdcError:
    before = shop.state()
    with pytest.raises(CbdcError) as caught:
        shop.receive(envelope, now)
    assert shop.state() == before
    assert shop.payments_received() == ()
    return caught.value


def test_accepts_a_genuine_payment(world: World, card: SecureElement, shop: SecureElement) -> None:
    payment = shop.receive(card.pay("shop", "w-shop", yuan(80), world.now), world.now)
    assert payment.amount_fen == yuan(80)
    assert shop.pending_received() == (payment,)


def test_expired_payer_certificate(world: World, shop: SecureElement) -> None:
    card = world.device("short-lived", valid_for=timedelta(hours=1))
    world.load(card, yuan(100))
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    error = refused_by(shop, envelope, world.now + timedelta(hours=2))
    assert isinstance(error, CertificateRefused) and error.code == "certificate_expired"


def test_payer_refuses_to_pay_with_an_expired_certificate(world: World) -> None:
    card = world.device("short-lived", valid_for=timedelta(hours=1))
    world.load(card, yuan(100))
    with pytest.raises(CertificateRefused) as caught:
        card.pay("shop", "w-shop", yuan(10), world.now + timedelta(hours=1))
    assert caught.value.code == "certificate_expired"
    assert card.state().balance_fen == yuan(100) and card.state().counter == 0


def test_payment_dated_before_the_certificate(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    backdated = extracted_key_payment(world, card, created_at="2026-02-01T00:00:00Z")
    assert refused_by(shop, backdated, world.now).code == "certificate_not_yet_valid"


def test_payee_clock_before_the_certificate(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    envelope = extracted_key_payment(world, card, created_at="2026-02-26T00:00:00Z")
    assert refused_by(shop, envelope, T0 - timedelta(days=3)).code == "certificate_not_yet_valid"


def test_revoked_payer_certificate(world: World, card: SecureElement, shop: SecureElement) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    shop.install_revocation_list(world.revoke(1, "dev-card"))
    error = refused_by(shop, envelope, world.now)
    assert error.code == "certificate_revoked"


def test_revoked_operator_certificate(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    # The central bank revokes bank-a's operator certificate: every device it certified falls.
    other_bank_shop = world.device("shop-b", operator_id="bank-b")
    other_bank_shop.install_revocation_list(world.revoke(1, "op-bank-a"))
    envelope = card.pay("shop-b", "w-shop-b", yuan(10), world.now)
    assert refused_by(other_bank_shop, envelope, world.now).code == "certificate_revoked"


def test_altered_amount(world: World, card: SecureElement, shop: SecureElement) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    envelope["message"]["amount_fen"] = yuan(100)
    error = refused_by(shop, envelope, world.now)
    assert isinstance(error, InvalidSignature) and error.code == "signature_invalid"


def test_altered_payee(world: World, card: SecureElement) -> None:
    thief = world.device("thief")
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    envelope["message"]["payee_device"] = "thief"
    envelope["message"]["payee_wallet"] = "w-thief"
    assert refused_by(thief, envelope, world.now).code == "signature_invalid"


def test_forged_by_an_uncertified_key(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    rogue = nacl.signing.SigningKey(seed("rogue"))
    envelope["message"]["amount_fen"] = yuan(400)
    message = envelope["message"]
    envelope["signature"] = signing.sign(rogue, message["domain"], message).hex()
    assert refused_by(shop, envelope, world.now).code == "signature_invalid"


def rogue_chain_payment(world: World, *, claim_real_root: bool) -> dict[str, Any]:
    """A device certified by an operator that a rogue key, not the central bank, certified."""
    rogue_root_key = signing_key("rogue-root")
    rogue_root = RootAuthority(LEDGER_ID, "pboc", rogue_root_key)
    operator_key = signing_key("operator:rogue")
    operator_certificate = rogue_root.certify_operator(
        serial="op-rogue",
        operator_id="rogue",
        operator_public_key=bytes(operator_key.verify_key),
        not_before=T0 - timedelta(days=1),
        not_after=T0 + timedelta(days=1),
    )
    if claim_real_root:  # the rogue names the real root as issuer; its signature stays its own
        message = {**operator_certificate.message, "issuer_key": world.root.public_key.hex()}
        signature = signing.sign(rogue_root_key, CERTIFICATE, message)
        operator_certificate = OperatorCertificate(message, signature)
    operator = OperatorAuthority(operator_key, operator_certificate)
    device_key = signing_key("device:rogue-card")
    certificate = operator.certify_device(
        serial="dev-rogue",
        device_id="rogue-card",
        device_public_key=bytes(device_key.verify_key),
        wallet="w-rogue",
        wallet_class=1,
        not_before=T0 - timedelta(days=1),
        not_after=T0 + timedelta(days=1),
    )
    sealed = seal(
        device_key,
        OFFLINE_PAYMENT,
        {
            "version": 1,
            "domain": OFFLINE_PAYMENT,
            "ledger_id": LEDGER_ID,
            "payer_device": "rogue-card",
            "payer_wallet": "w-rogue",
            "counter": 1,
            "load_counter": 1,
            "payments_since_sync": 1,
            "payee_device": "shop",
            "payee_wallet": "w-shop",
            "amount_fen": yuan(500),
            "currency": "CNY",
            "created_at": format_time(world.now),
            "prev_hash": "0" * 64,
        },
    )
    return payment_envelope(
        sealed["message"], bytes.fromhex(sealed["signature"]), certificate, operator_certificate
    )


def test_device_certified_by_a_rogue_operator(world: World, shop: SecureElement) -> None:
    envelope = rogue_chain_payment(world, claim_real_root=False)
    assert refused_by(shop, envelope, world.now).code == "certificate_chain_invalid"
    envelope = rogue_chain_payment(world, claim_real_root=True)
    assert refused_by(shop, envelope, world.now).code == "certificate_invalid"


def test_device_certificate_signed_by_another_operator(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    envelope["operator_certificate"] = world.operator("bank-b").certificate.to_envelope()
    assert refused_by(shop, envelope, world.now).code == "certificate_chain_invalid"


def test_tampered_certificate_caps(world: World, card: SecureElement, shop: SecureElement) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    envelope["certificate"]["message"]["offline_payment_fen_max"] = yuan(499)
    assert refused_by(shop, envelope, world.now).code == "certificate_invalid"


def test_payment_travelling_with_another_devices_certificate(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    other = world.device("other")
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    envelope["certificate"] = other.certificate.to_envelope()  # type: ignore[union-attr]
    assert refused_by(shop, envelope, world.now).code == "certificate_mismatch"


def test_single_payment_cap_exceeded(world: World, shop: SecureElement) -> None:
    anonymous = world.device("anon", wallet_class=4)  # 100 yuan per payment
    world.load(anonymous, yuan(200))
    envelope = extracted_key_payment(world, anonymous, amount_fen=yuan(150))
    assert refused_by(shop, envelope, world.now).code == "offline_payment_cap_exceeded"
    with pytest.raises(OfflineRefused) as caught:
        anonymous.pay("shop", "w-shop", yuan(150), world.now)
    assert caught.value.code == "offline_payment_cap_exceeded"


def test_payments_between_syncs_exhausted(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    envelope = extracted_key_payment(world, card, counter=11, payments_since_sync=11)
    assert refused_by(shop, envelope, world.now).code == "offline_payments_exhausted"


def test_counter_replay_of_the_same_payment(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    shop.receive(envelope, world.now)
    with pytest.raises(OfflineRefused) as caught:
        shop.receive(copy.deepcopy(envelope), world.now)
    assert caught.value.code == "offline_counter_replayed"
    assert shop.state().pending_fen == yuan(10)


def test_counter_replay_of_an_older_counter(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    clone = card.clone()
    shop.receive(card.pay("shop", "w-shop", yuan(10), world.tick()), world.now)
    shop.receive(card.pay("shop", "w-shop", yuan(10), world.tick()), world.now)
    older = clone.pay("shop", "w-shop", yuan(300), world.tick())  # the clone's counter 1
    with pytest.raises(OfflineRefused) as caught:
        shop.receive(older, world.now)
    assert caught.value.code == "offline_counter_replayed"
    assert shop.state().pending_fen == yuan(20)


def test_chain_broken_by_a_clone_at_the_same_shop(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    clone = card.clone()
    shop.receive(card.pay("shop", "w-shop", yuan(10), world.tick()), world.now)  # counter 1
    clone.pay("bakery", "w-bakery", yuan(200), world.tick())  # the clone's counter 1
    forked = clone.pay("shop", "w-shop", yuan(200), world.tick())  # counter 2, other branch
    assert refused_by_after_first(shop, forked, world.now).code == "offline_chain_broken"
    # The genuine card's next payment follows the payment the shop holds: accepted.
    shop.receive(card.pay("shop", "w-shop", yuan(10), world.tick()), world.now)
    assert shop.state().pending_fen == yuan(20)


def refused_by_after_first(shop: SecureElement, envelope: Any, now: Any) -> CbdcError:
    before = (shop.state(), shop.payments_received())
    with pytest.raises(CbdcError) as caught:
        shop.receive(envelope, now)
    assert (shop.state(), shop.payments_received()) == before
    return caught.value


def test_pending_value_is_not_spendable_onward(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    shop.receive(card.pay("shop", "w-shop", yuan(300), world.now), world.now)
    assert shop.state().balance_fen == 0 and shop.state().pending_fen == yuan(300)
    with pytest.raises(OfflineRefused) as caught:
        shop.pay("card", "w-card", yuan(100), world.now)
    assert caught.value.code == "offline_value_pending"
    with pytest.raises(OfflineRefused) as caught:
        shop.pay("card", "w-card", yuan(400), world.now)
    assert caught.value.code == "offline_balance_insufficient"
    assert shop.state().counter == 0


def test_wrong_payee(world: World, card: SecureElement, shop: SecureElement) -> None:
    envelope = card.pay("bakery", "w-bakery", yuan(10), world.now)
    assert refused_by(shop, envelope, world.now).code == "offline_wrong_payee"
    envelope = card.pay("shop", "w-someone-else", yuan(10), world.now)
    assert refused_by(shop, envelope, world.now).code == "offline_wrong_payee"


def test_payment_from_the_future(world: World, card: SecureElement, shop: SecureElement) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now + timedelta(minutes=10))
    assert refused_by(shop, envelope, world.now).code == "offline_from_future"
    shop.receive(envelope, world.now + timedelta(minutes=5))


def test_wrong_ledger(world: World, shop: SecureElement) -> None:
    # The same central-bank key running a second ledger (a test network, say).
    test_net = RootAuthority("test-net", "pboc", signing_key("root"))
    operator_key = signing_key("operator:bank-a")
    operator = OperatorAuthority(
        operator_key,
        test_net.certify_operator(
            serial="op-test-net",
            operator_id="bank-a",
            operator_public_key=bytes(operator_key.verify_key),
            not_before=T0 - timedelta(days=1),
            not_after=T0 + timedelta(days=1),
        ),
    )
    card = SecureElement(
        seed=seed("device:tn"), ledger_id="test-net", root_public_key=test_net.public_key
    )
    card.install_certificate(
        operator.certify_device(
            serial="dev-tn",
            device_id="tn",
            device_public_key=card.public_key,
            wallet="w-tn",
            wallet_class=2,
            not_before=T0 - timedelta(days=1),
            not_after=T0 + timedelta(days=1),
        ),
        operator.certificate,
        world.now,
    )
    card.apply_load(
        operator.sign_load_receipt(
            load_id="l1", device_id="tn", wallet="w-tn", amount_fen=yuan(10), load_counter=1,
            created_at=world.now,
        )
    )
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    assert refused_by(shop, envelope, world.now).code == "offline_wrong_ledger"


def test_malformed_envelopes(world: World, card: SecureElement, shop: SecureElement) -> None:
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    with_extra = {**envelope, "note": "hi"}
    assert isinstance(refused_by(shop, with_extra, world.now), InvalidMessage)
    extra_field = copy.deepcopy(envelope)
    extra_field["message"]["memo"] = "x"
    assert refused_by(shop, extra_field, world.now).code == "field_unknown"
    float_amount = copy.deepcopy(envelope)
    float_amount["message"]["amount_fen"] = 1000.0
    assert refused_by(shop, float_amount, world.now).code == "amount_invalid"
    assert refused_by(shop, "CBDC1:garbage", world.now).code == "envelope_invalid"
    assert refused_by(shop, with_extra, world.now).code == "envelope_invalid"


def test_uncertified_payee_cannot_receive(world: World, card: SecureElement) -> None:
    blank = SecureElement(
        seed=seed("device:blank"), ledger_id=LEDGER_ID, root_public_key=world.root.public_key
    )
    envelope = card.pay("shop", "w-shop", yuan(10), world.now)
    with pytest.raises(OfflineRefused) as caught:
        blank.receive(envelope, world.now)
    assert caught.value.code == "offline_device_uncertified"


def test_custom_caps_are_enforced(world: World, shop: SecureElement) -> None:
    card = world.device("kid", caps=OfflineCaps(yuan(50), yuan(20), 2))
    world.load(card, yuan(50))
    shop.receive(card.pay("shop", "w-shop", yuan(20), world.tick()), world.now)
    shop.receive(card.pay("shop", "w-shop", yuan(20), world.tick()), world.now)
    with pytest.raises(OfflineRefused) as caught:
        card.pay("shop", "w-shop", yuan(5), world.tick())
    assert caught.value.code == "offline_payments_exhausted"


def test_a_payee_checks_every_chain_it_has_not_verified_itself(
    world: World, card: SecureElement, shop: SecureElement
) -> None:
    """A payee remembers the operator certificates and chains it verified, so each is verified
    once; a copy altered in any byte is not one of them and is refused, even from a device or
    an operator it has been paid by before."""
    shop.receive(card.pay("shop", "w-shop", yuan(10), world.now), world.now)
    other = world.device("other")
    world.load(other, yuan(100))
    shop.receive(other.pay("shop", "w-shop", yuan(5), world.now), world.now)  # same operator
    held = shop.payments_received()
    altered_operator = card.pay("shop", "w-shop", yuan(10), world.now)
    altered_operator["operator_certificate"]["message"]["not_after"] = format_time(
        T0 + timedelta(days=4000))
    altered_device = other.pay("shop", "w-shop", yuan(5), world.now)
    altered_device["certificate"]["message"]["offline_payments_max"] = 11
    for altered in (altered_operator, altered_device):
        with pytest.raises(CertificateRefused) as caught:
            shop.receive(altered, world.now)
        assert caught.value.code == "certificate_invalid"
    assert shop.payments_received() == held
