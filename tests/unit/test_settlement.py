"""The pure settlement rules: order of refusals, and what the waterfalls move."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.errors import CbdcError, InvalidRequest
from cbdc.domain.identity import IdentityEvidence, bank_account_ref, evidence_hash
from cbdc.domain.money import yuan
from cbdc.domain.settlement import Party, plan_transfer
from cbdc.domain.tiers import DEFAULT_CLASSES, Limits, Usage

TODAY = Usage(date(2026, 3, 2), 0, 2026, 0)


def wallet(balance_fen: int, number: int = 4, *, linked: bool = False,
           reverse: bool = False, usage: Usage = TODAY) -> Party:
    return Party(f"w-{number}", balance_fen, DEFAULT_CLASSES[number].limits, usage,
                 bank_account_linked=linked, reverse_waterfall=reverse)


def code_of(payer: Party, payee: Party, amount_fen: int, **options: bool) -> str:
    with pytest.raises(CbdcError) as error:
        plan_transfer(payer, payee, amount_fen, **options)
    return error.value.code


def test_refusals_come_in_the_documented_order() -> None:
    spent = Usage(TODAY.day, yuan(4_500), 2026, yuan(4_500))
    poor_and_spent = wallet(yuan(10), usage=spent)
    full = wallet(yuan(20_000), 3)
    assert code_of(poor_and_spent, full, yuan(600)) == "daily_limit_exceeded"
    assert code_of(wallet(yuan(10)), full, yuan(600)) == "balance_limit_exceeded"
    assert code_of(wallet(yuan(10)), wallet(0), yuan(600)) == "insufficient_funds"
    # Refunds and sweeps do not count as spending: the caps step is skipped.
    assert code_of(poor_and_spent, wallet(0), yuan(600), counts_as_spending=False) == (
        "insufficient_funds"
    )


def test_reverse_waterfall_only_when_enabled_and_allowed() -> None:
    payer = wallet(yuan(100), 2, linked=True, reverse=True)
    assert plan_transfer(payer, wallet(0), yuan(300)).topped_up_fen == yuan(200)
    assert code_of(payer, wallet(0), yuan(300), reverse_waterfall_allowed=False) == (
        "insufficient_funds"
    )
    assert code_of(wallet(yuan(100), 2, linked=True), wallet(0), yuan(300)) == (
        "insufficient_funds"
    )


@given(
    payer_balance=st.integers(0, yuan(600_000)),
    payee_balance=st.integers(0, yuan(500_000)),
    amount=st.integers(1, yuan(50_000)),
)
def test_a_plan_never_leaves_a_negative_or_over_cap_balance(
    payer_balance: int, payee_balance: int, amount: int
) -> None:
    payer = wallet(payer_balance, 1, linked=True, reverse=True)
    payee = wallet(payee_balance, 2, linked=True)
    plan = plan_transfer(payer, payee, amount)
    assert payer_balance + plan.topped_up_fen - amount >= 0
    assert plan.topped_up_fen == max(0, amount - payer_balance)
    cap = payee.limits.balance_fen_max
    assert cap is not None
    assert payee_balance + amount - plan.swept_fen <= max(cap, payee_balance)
    assert 0 <= plan.swept_fen <= amount


def test_sub_wallet_limits_tighten_the_class() -> None:
    caps = Limits(yuan(1_000), None, yuan(50), None)
    tightened = DEFAULT_CLASSES[2].limits.tightened(caps)
    assert tightened == Limits(yuan(1_000), yuan(50_000), yuan(50), None)


def test_evidence_is_normalised_before_hashing() -> None:
    spaced = IdentityEvidence("+86 138-0000-0001", "11010119900101123x", "6222 0202 0011 2233")
    plain = IdentityEvidence("+8613800000001", "11010119900101123X", "6222020200112233")
    assert spaced.normalised() == plain.normalised()
    assert plain.normalised().kinds() == {"phone", "id_document", "bank_account"}
    salt = b"\x07" * 16
    digest = evidence_hash(salt, "bank_account", "6222020200112233")
    assert digest != evidence_hash(b"\x08" * 16, "bank_account", "6222020200112233")
    assert bank_account_ref(digest) == "ba:" + digest[:32]
    with pytest.raises(InvalidRequest):
        IdentityEvidence("12", None).normalised()
    with pytest.raises(ValueError):
        evidence_hash(b"short", "phone", "+8613800000001")
