"""Fraud classification: what the ledger can prove from one device's payments."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, TypedDict

import pytest

from cbdc.domain.errors import InvalidRequest
from cbdc.domain.money import yuan
from cbdc.offline import FindingCode, classify_device_payments, verify_offline_payment
from tests.unit.offline.world import World, extracted_key_payment


class Filings(TypedDict, total=False):
    """Load and unload statements, as classify_device_payments takes them by keyword."""

    loads: list[dict[str, Any]]
    unloads: list[dict[str, Any]]


def test_an_honest_history_has_no_findings_and_duplicates_are_not_fraud() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(300))
    made = [card.pay("shop", "w-shop", yuan(40), world.tick()) for _ in range(3)]
    verdict = world.classify("card", [*made, copy.deepcopy(made[0])])
    assert verdict.findings == () and len(verdict.authentic) == 3
    assert verdict.honest_paid_fen == yuan(120)


def test_the_ledger_reverifies_with_the_same_function() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(300))
    envelope = card.pay("shop", "w-shop", yuan(40), world.now)
    payment = verify_offline_payment(
        envelope, world.root.public_key, world.revocations, world.now + timedelta(days=3)
    )
    assert payment.payer_device == "card" and payment.operator_id == "bank-a"
    assert payment.to_envelope() == envelope


def test_forged_and_altered_payments() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(300))
    genuine = card.pay("shop", "w-shop", yuan(40), world.tick())
    altered = copy.deepcopy(genuine)
    altered["message"]["amount_fen"] = yuan(4)
    broken = {"message": {"counter": 9, "amount_fen": 5}, "signature": "00"}
    verdict = world.classify("card", [genuine, altered, broken, broken])
    forged = verdict.of(FindingCode.FORGED)
    assert [(f.counters, f.amount_fen) for f in forged] == [((1,), yuan(4)), ((9,), 5)]
    assert [p.payment_hash for p in verdict.honest] == [verdict.authentic[0].payment_hash]
    assert verdict.codes() == {"offline_forged"}


def test_a_payment_from_another_device_is_a_caller_error() -> None:
    world = World()
    card = world.device("card")
    other = world.device("other")
    world.load(other, yuan(10))
    with pytest.raises(InvalidRequest) as caught:
        world.classify("card", [other.pay("shop", "w-shop", yuan(1), world.now)])
    assert caught.value.code == "device_mismatch"
    assert card.state().counter == 0


def test_overspend_beyond_what_was_loaded() -> None:
    # An extracted key signs fresh counters the secure element never reached.
    world = World()
    card = world.device("card")
    world.load(card, yuan(500))
    first = card.pay("shop", "w-shop", yuan(200), world.tick())
    second = card.pay("shop", "w-shop", yuan(200), world.tick())
    third = extracted_key_payment(world, card, amount_fen=yuan(200))  # counter 3
    fourth = extracted_key_payment(world, card, counter=4, amount_fen=yuan(50))
    verdict = world.classify("card", [first, second, third, fourth])
    (finding,) = verdict.of(FindingCode.OVERSPEND)
    assert finding.counters == (3, 4)
    assert finding.amount_fen == yuan(250)
    assert verdict.honest_paid_fen == yuan(400) <= verdict.escrow_fen


def test_a_clone_paying_after_the_card_was_unloaded() -> None:
    world = World()
    card = world.device("card")
    world.load(card, yuan(500))
    card.pay("shop", "w-shop", yuan(100), world.tick())
    clone = card.clone()
    world.unload(card)  # 400 yuan back to the wallet; counters up to 1 closed
    late = clone.pay("bakery", "w-bakery", yuan(400), world.tick())  # counter 2, load 1
    verdict = world.classify("card", [*card.payments_made(), late])
    (finding,) = verdict.of(FindingCode.AFTER_UNLOAD)
    assert finding.counters == (2,) and finding.amount_fen == yuan(400)
    assert verdict.codes() == {"offline_after_unload"}


def test_a_clone_spending_a_counter_the_unload_vouched_for() -> None:
    # The clone is copied before counter 1; the card pays twice and unloads. Only the card's
    # second payment and the clone's first reach the ledger: the chain proves which is genuine.
    world = World()
    card = world.device("card")
    world.load(card, yuan(500))
    clone = card.clone()
    card.pay("tea-shop", "w-tea-shop", yuan(100), world.tick())
    genuine_second = card.pay("tea-shop", "w-tea-shop", yuan(100), world.tick())
    world.unload(card)
    cloned_first = clone.pay("bakery", "w-bakery", yuan(300), world.tick())
    verdict = world.classify("card", [genuine_second, cloned_first])
    (finding,) = verdict.of(FindingCode.AFTER_UNLOAD)
    assert finding.counters == (1,) and finding.amount_fen == yuan(300)
    assert [p.counter for p in verdict.honest] == [2]


def test_payments_beyond_what_the_unload_declared() -> None:
    # Nothing links the clone's payment to the declared chain, but the closed range now holds
    # more than the unload declared paid: the unproven excess is flagged.
    world = World()
    card = world.device("card")
    world.load(card, yuan(500))
    clone = card.clone()
    card.pay("tea-shop", "w-tea-shop", yuan(100), world.tick())
    card.pay("tea-shop", "w-tea-shop", yuan(100), world.tick())
    card.pay("tea-shop", "w-tea-shop", yuan(100), world.tick())
    world.unload(card)
    clone.pay("bakery", "w-bakery", yuan(10), world.tick())
    cloned_second = clone.pay("bakery", "w-bakery", yuan(250), world.tick())
    verdict = world.classify("card", [cloned_second])
    assert verdict.findings == ()  # alone, 250 fits within the 300 declared paid
    genuine_first = card.payments_made()[0]
    verdict = world.classify("card", [genuine_first, cloned_second])
    (finding,) = verdict.of(FindingCode.AFTER_UNLOAD)
    assert finding.counters == (2,) and finding.amount_fen == yuan(250)
    assert [p.counter for p in verdict.honest] == [1]


def test_expired_revoked_and_over_cap_payments_are_named() -> None:
    world = World()
    card = world.device("card", valid_for=timedelta(days=1))
    world.load(card, yuan(500))
    on_time = card.pay("shop", "w-shop", yuan(10), world.tick())
    late = extracted_key_payment(
        world, card, amount_fen=yuan(10), created_at="2026-03-05T00:00:00Z"
    )
    anonymous = world.device("anon", wallet_class=4)
    world.load(anonymous, yuan(200))
    over_cap = extracted_key_payment(world, anonymous, amount_fen=yuan(150))
    assert world.classify("card", [on_time, late]).codes() == {"certificate_expired"}
    assert world.classify("anon", [over_cap]).codes() == {"offline_cap_exceeded"}
    world.revoke(1, "dev-card")
    verdict = world.classify("card", [on_time, late])
    assert verdict.codes() == {"certificate_revoked", "certificate_expired"}
    assert verdict.flagged[verdict.authentic[0].payment_hash] == (FindingCode.CERTIFICATE_REVOKED,)
    assert verdict.honest == ()


def test_loads_and_unloads_of_another_device_are_a_caller_error() -> None:
    world = World()
    card = world.device("card")
    other = world.device("other")
    world.load(other, yuan(10))
    world.unload(other)
    misfilings: tuple[Filings, ...] = (
        {"loads": world.loads["other"]}, {"unloads": world.unloads["other"]})
    for misfiled in misfilings:
        with pytest.raises(InvalidRequest) as caught:
            classify_device_payments(
                "card", [], root_public_key=world.root.public_key,
                revocations=world.revocations, **misfiled,
            )
        assert caught.value.code == "device_mismatch"
    assert world.classify("card", []).findings == ()
    assert card.state().balance_fen == 0
