"""The validators of signed messages: exact field sets, strict types, formats, and the order in
which a bad message is judged (version, domain, missing, unknown, values, cross-field, signature).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.domain.errors import CbdcError, InvalidMessage
from cbdc.domain.messages import (
    KINDS,
    PAYMENT,
    PAYMENT_CODE,
    PAYMENT_REQUEST,
    RECEIPT,
    format_time,
    parse_time,
    seal,
    validate_message,
    verify_envelope,
)
from tests.unit.samples import CUSTOMER, MERCHANT, sample_envelopes, verifier_key

SAMPLES = sample_envelopes()
INTEGER_FIELDS = ("amount_fen", "max_amount_fen", "sequence", "entry_seq", "version")


def message_of(domain: str) -> dict[str, Any]:
    return copy.deepcopy(dict(SAMPLES[domain]["message"]))


def refusal(message: object, domain: str) -> CbdcError:
    with pytest.raises(CbdcError) as caught:
        validate_message(message, domain)
    return caught.value


def field_cases() -> list[tuple[str, str]]:
    return [(domain, name) for domain, kind in KINDS.items() for name in sorted(kind.required)]


@pytest.mark.parametrize("domain", list(KINDS))
def test_every_sample_validates_and_verifies(domain: str) -> None:
    envelope = SAMPLES[domain]
    assert validate_message(envelope["message"], domain) == envelope["message"]
    verified = verify_envelope(envelope, domain, public_key_hex=verifier_key(domain))
    assert verified == envelope["message"]


@pytest.mark.parametrize(("domain", "name"), field_cases())
def test_a_missing_required_field_is_named(domain: str, name: str) -> None:
    message = message_of(domain)
    del message[name]
    error = refusal(message, domain)
    assert (error.code, error.extra["field"]) == ("field_missing", name)


@pytest.mark.parametrize("domain", list(KINDS))
def test_an_unknown_field_is_refused(domain: str) -> None:
    message = message_of(domain) | {"fee_fen": 1}
    error = refusal(message, domain)
    assert (error.code, error.extra["field"]) == ("field_unknown", "fee_fen")


@pytest.mark.parametrize(
    ("domain", "name"),
    [(d, n) for d, kind in KINDS.items() for n in sorted(kind.required) if n in INTEGER_FIELDS],
)
@pytest.mark.parametrize("bad", [1.0, 2.5, True, False, "1", None], ids=repr)
def test_integer_fields_refuse_floats_bools_strings_and_null(
    domain: str, name: str, bad: object
) -> None:
    message = message_of(domain)
    message[name] = bad
    error = refusal(message, domain)
    expected = "amount_invalid" if name.endswith("amount_fen") else "field_invalid"
    assert (error.code, error.extra["field"]) == (expected, name)


@pytest.mark.parametrize(
    ("domain", "name"),
    [(d, n) for d, kind in KINDS.items() for n in sorted(kind.required)
     if n not in INTEGER_FIELDS and n != "domain"],
)
@pytest.mark.parametrize("bad", [1, True, None, ["x"], {"x": 1}], ids=repr)
def test_string_fields_refuse_other_json_types(domain: str, name: str, bad: object) -> None:
    message = message_of(domain)
    message[name] = bad
    error = refusal(message, domain)
    assert error.extra["field"] == name
    assert error.code in {"field_invalid", "public_key_invalid"}


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-04T01:30:00", "2026-05-04 01:30:00Z", "2026-05-04T01:30:00+00:00",
        "2026-05-04T01:30:00z", "2026-05-04T01:30Z", "2026-05-04T01:30:00.Z",
        "2026-05-04T01:30:00.1234567Z", "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
        "2026-05-04T24:00:00Z", "2026-05-04T23:59:60Z", "0000-01-01T00:00:00Z",
        "２０２６-05-04T01:30:00Z", "2026-05-04T01:30:00Z\n", " 2026-05-04T01:30:00Z", "",
    ],
)
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_time(text, field_name="created_at")
    assert (caught.value.code, caught.value.extra["field"]) == ("field_invalid", "created_at")
    message = message_of(PAYMENT)
    message["created_at"] = text
    assert refusal(message, PAYMENT).code == "field_invalid"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-04T01:30:00Z", datetime(2026, 5, 4, 1, 30, tzinfo=UTC)),
        ("2028-02-29T23:59:59.5Z", datetime(2028, 2, 29, 23, 59, 59, 500_000, tzinfo=UTC)),
        ("0001-01-01T00:00:00.000001Z", datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
    ],
)
def test_good_times_parse_to_utc(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_format_time_drops_zero_fractions_and_keeps_six_digits_otherwise() -> None:
    shanghai = datetime(2026, 5, 4, 17, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert format_time(shanghai) == "2026-05-04T09:30:00Z"
    assert format_time(datetime(5, 1, 2, 3, 4, 5, 60, tzinfo=UTC)) == "0005-01-02T03:04:05.000060Z"
    with pytest.raises(InvalidMessage):
        format_time(datetime(2026, 5, 4))


@given(st.datetimes(timezones=st.just(UTC)))
def test_time_round_trip(moment: datetime) -> None:
    assert parse_time(format_time(moment)) == moment


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("a" * 64, True), ("a" * 65, False), ("", False), ("w.alice_01:cn-2", True),
     ("w alice", False), ("w/alice", False), ("w-٣", False), ("用户", False)],
)
def test_ids_are_ascii_1_to_64(value: str, accepted: bool) -> None:
    message = message_of(PAYMENT)
    message["payer"] = value
    if accepted:
        assert validate_message(message, PAYMENT)["payer"] == value
    else:
        assert refusal(message, PAYMENT).extra["field"] == "payer"


@pytest.mark.parametrize(
    ("memo", "accepted"),
    [("好" * 140, True), ("🍜" * 140, True), ("好" * 141, False), ("", False),
     ("tab\there", False), ("bell\x07", False), ("c1\x85", False), ("rtl\u202eabc", False),
     ("isolate\u2066x\u2069", False), ("lone \ud800 surrogate", False), ('"quoted" \\ ok', True)],
)
def test_memo_is_1_to_140_code_points_without_controls(memo: str, accepted: bool) -> None:
    message = message_of(PAYMENT)
    message["memo"] = memo
    if accepted:
        assert validate_message(message, PAYMENT)["memo"] == memo
    else:
        error = refusal(message, PAYMENT)
        assert (error.code, error.extra["field"]) == ("field_invalid", "memo")


def test_reference_is_at_most_64_characters() -> None:
    message = message_of(PAYMENT_REQUEST)
    message["reference"] = "订" * 64
    validate_message(message, PAYMENT_REQUEST)
    message["reference"] = "订" * 65
    assert refusal(message, PAYMENT_REQUEST).extra["field"] == "reference"


@pytest.mark.parametrize("currency", ["USD", "cny", "CNY ", "e-CNY"])
def test_only_cny_is_accepted(currency: str) -> None:
    message = message_of(PAYMENT)
    message["currency"] = currency
    assert refusal(message, PAYMENT).code == "currency_unsupported"


@pytest.mark.parametrize("amount", [0, -1, 2**53])
def test_amounts_must_be_positive_and_json_safe(amount: int) -> None:
    message = message_of(PAYMENT)
    message["amount_fen"] = amount
    assert refusal(message, PAYMENT).code == "amount_invalid"


@pytest.mark.parametrize(("name", "bad"), [("sequence", 0), ("sequence", 2**53)])
def test_sequence_bounds(name: str, bad: int) -> None:
    message = message_of(PAYMENT)
    message[name] = bad
    assert refusal(message, PAYMENT).code == "field_invalid"


@pytest.mark.parametrize(("name", "bad"), [("kind", "transfer"), ("entry_hash", "7F" * 32),
                                           ("entry_hash", "7f" * 31), ("entry_seq", 0)])
def test_receipt_fields(name: str, bad: object) -> None:
    message = message_of(RECEIPT)
    message[name] = bad
    error = refusal(message, RECEIPT)
    assert (error.code, error.extra["field"]) == ("field_invalid", name)


@pytest.mark.parametrize("domain", [PAYMENT_REQUEST, PAYMENT_CODE])
@pytest.mark.parametrize("minutes", [0, -1])
def test_expiry_must_come_after_creation(domain: str, minutes: int) -> None:
    message = message_of(domain)
    created = parse_time(message["created_at"])
    message["expires_at"] = format_time(created + timedelta(minutes=minutes))
    error = refusal(message, domain)
    assert (error.code, error.extra["field"]) == ("field_invalid", "expires_at")


def test_optional_fields_may_be_absent() -> None:
    message = message_of(PAYMENT)
    del message["memo"], message["request_id"]
    validate_message(message, PAYMENT)
    code = message_of(PAYMENT_CODE)
    del code["merchant"]
    validate_message(code, PAYMENT_CODE)


# --- the order of judgement ----------------------------------------------------------------------


def test_version_is_judged_before_the_field_set() -> None:
    message = message_of(PAYMENT) | {"version": 2, "new_v2_field": "x"}
    del message["payee"]
    assert refusal(message, PAYMENT).code == "version_unsupported"


def test_domain_is_judged_before_the_field_set() -> None:
    error = refusal(message_of(PAYMENT_REQUEST), PAYMENT)
    assert (error.code, error.extra["field"]) == ("domain_invalid", "domain")


def test_missing_is_judged_before_unknown_and_unknown_before_values() -> None:
    message = message_of(PAYMENT) | {"zzz": 1, "amount_fen": 1.5}
    del message["payee"]
    assert refusal(message, PAYMENT).code == "field_missing"
    del message["zzz"]
    message["payee"] = "w-noodle-shop"
    message["aaa"] = 1
    assert refusal(message, PAYMENT).extra["field"] == "aaa"


def test_values_are_judged_in_ascending_field_name_order() -> None:
    message = message_of(PAYMENT) | {"sequence": 0, "payer": "bad payer", "currency": "USD"}
    assert refusal(message, PAYMENT).extra["field"] == "currency"
    del message["currency"]
    message["currency"] = "CNY"
    assert refusal(message, PAYMENT).extra["field"] == "payer"


@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        ([], "envelope_invalid"),
        ({"message": {}}, "envelope_invalid"),
        ({"message": {}, "signature": "00" * 64, "key": "x"}, "envelope_invalid"),
        ({"message": {}, "signature": "AA" * 64}, "envelope_invalid"),
        ({"message": {}, "signature": "00" * 63}, "envelope_invalid"),
        ({"message": "payment", "signature": "00" * 64}, "message_invalid"),
        ({"message": {}, "signature": "00" * 64}, "field_missing"),
    ],
)
def test_envelope_shape(envelope: object, code: str) -> None:
    with pytest.raises(CbdcError) as caught:
        verify_envelope(envelope, PAYMENT)
    assert caught.value.code == code


def test_a_good_message_with_a_bad_signature_fails_last() -> None:
    envelope = SAMPLES[PAYMENT]
    other = SAMPLES[PAYMENT_REQUEST]["signature"]
    with pytest.raises(CbdcError) as caught:
        verify_envelope({"message": envelope["message"], "signature": other}, PAYMENT)
    assert caught.value.code == "signature_invalid"
    assert caught.value.status == 422


def test_a_receipt_needs_the_ledger_key_from_the_verifier() -> None:
    with pytest.raises(TypeError):
        verify_envelope(SAMPLES[RECEIPT], RECEIPT)
    with pytest.raises(CbdcError) as caught:
        verify_envelope(SAMPLES[RECEIPT], RECEIPT, public_key_hex=CUSTOMER.public_key_hex)
    assert caught.value.code == "signature_invalid"


def test_seal_refuses_a_message_naming_another_signer() -> None:
    message = message_of(PAYMENT)
    with pytest.raises(CbdcError) as caught:
        seal(nacl.signing.SigningKey(MERCHANT.seed), message)
    assert (caught.value.code, caught.value.extra["field"]) == ("public_key_invalid", "public_key")


def test_seal_refuses_an_unknown_domain() -> None:
    message = message_of(PAYMENT) | {"domain": "cbdc/v1/transfer"}
    with pytest.raises(CbdcError) as caught:
        seal(nacl.signing.SigningKey(CUSTOMER.seed), message)
    assert caught.value.code == "domain_invalid"
