"""Shape rules of the offline messages: exact field sets, ids, times, amounts, cross-fields."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.errors import InvalidMessage, InvalidRequest
from cbdc.offline.messages import (
    OFFLINE_PAYMENT,
    REVOCATION_LIST,
    UNLOAD,
    format_time,
    message_hash,
    parse_time,
    validate,
)
from tests.unit.offline.world import World


def a_payment() -> dict[str, Any]:
    return {
        "version": 1,
        "domain": OFFLINE_PAYMENT,
        "ledger_id": "cbdc-test",
        "payer_device": "card",
        "payer_wallet": "w-card",
        "counter": 3,
        "load_counter": 1,
        "payments_since_sync": 3,
        "payee_device": "shop",
        "payee_wallet": "w-shop",
        "amount_fen": 1234,
        "currency": "CNY",
        "created_at": "2026-03-01T09:00:00Z",
        "prev_hash": "0" * 64,
    }


def test_a_well_formed_payment_validates_to_an_equal_plain_copy() -> None:
    payment = a_payment()
    assert validate(OFFLINE_PAYMENT, payment) == payment


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("version", 2, "version_unsupported"),
        ("version", True, "field_invalid"),
        ("domain", "cbdc/v1/payment", "domain_invalid"),
        ("currency", "USD", "currency_unsupported"),
        ("counter", 0, "field_invalid"),
        ("counter", "3", "field_invalid"),
        ("amount_fen", 0, "amount_invalid"),
        ("amount_fen", 12.5, "amount_invalid"),
        ("amount_fen", 2**53, "amount_invalid"),
        ("payer_device", "has space", "field_invalid"),
        ("payer_device", "x" * 65, "field_invalid"),
        ("prev_hash", "A" * 64, "field_invalid"),
        ("created_at", "2026-03-01 09:00:00Z", "field_invalid"),
        ("created_at", "2026-03-01T09:00:00+00:00", "field_invalid"),
        ("created_at", "2026-02-30T09:00:00Z", "field_invalid"),
        ("created_at", "2026-03-01T09:00:00.1234567Z", "field_invalid"),
        ("payments_since_sync", 4, "field_invalid"),
    ],
)
def test_bad_fields_are_refused(field: str, value: Any, code: str) -> None:
    payment = a_payment()
    payment[field] = value
    with pytest.raises(InvalidRequest) as caught:
        validate(OFFLINE_PAYMENT, payment)
    assert caught.value.code == code
    assert caught.value.extra.get("field") == field


def test_the_field_set_is_exact() -> None:
    missing = a_payment()
    del missing["prev_hash"]
    extra = {**a_payment(), "memo": "thanks"}
    for message, code in (
        (missing, "field_missing"), (extra, "field_unknown"), ([], "message_invalid")
    ):
        with pytest.raises(InvalidMessage) as caught:
            validate(OFFLINE_PAYMENT, message)
        assert caught.value.code == code
    with pytest.raises(InvalidMessage) as caught:
        validate(UNLOAD, a_payment())  # a payment is not an unload
    assert caught.value.code == "domain_invalid"


def test_an_unload_cannot_return_more_than_was_loaded_and_not_paid() -> None:
    world = World()
    card = world.device("card")
    world.load(card, 1000)
    statement = copy.deepcopy(card.unload(world.now)["message"])
    assert validate(UNLOAD, statement) == statement
    statement["amount_fen"] = 1001
    with pytest.raises(InvalidMessage):
        validate(UNLOAD, statement)


def test_revocation_lists_are_sorted_and_unique() -> None:
    world = World()
    message = world.revoke(1, "dev-b", "dev-a")["message"]
    assert message["revoked"] == ["dev-a", "dev-b"]
    for revoked in (["dev-b", "dev-a"], ["dev-a", "dev-a"], "dev-a", [1]):
        with pytest.raises(InvalidMessage):
            validate(REVOCATION_LIST, {**message, "revoked": revoked})


def test_certificate_windows_and_caps_are_consistent() -> None:
    world = World()
    certificate = world.device("card").certificate
    assert certificate is not None
    message = dict(certificate.message)
    for change, code in (
        ({"not_after": message["not_before"]}, "field_invalid"),
        ({"offline_payment_fen_max": message["offline_balance_fen_max"] + 1}, "field_invalid"),
        ({"wallet_class": 5}, "field_invalid"),
        ({"role": "bank"}, "field_unknown"),  # judged as an operator certificate
        ({"public_key": "00" * 32}, "public_key_invalid"),  # not of prime order
    ):
        with pytest.raises(InvalidRequest) as caught:
            validate("cbdc/v1/certificate", {**message, **change})
        assert caught.value.code == code


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 1)))
def test_times_round_trip(moment: datetime) -> None:
    assert parse_time(format_time(moment)) == moment


@given(st.integers(1, 2**53 - 1), st.integers(3, 10**6))
def test_the_hash_changes_with_any_signed_field(amount_fen: int, counter: int) -> None:
    base = a_payment()
    other = {**base, "amount_fen": amount_fen, "counter": counter}
    assert (message_hash(OFFLINE_PAYMENT, base) == message_hash(OFFLINE_PAYMENT, other)) == (
        base == other
    )
