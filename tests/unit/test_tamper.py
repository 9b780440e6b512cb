"""Property: a signed message cannot be changed without verification failing.

Any single field of any kind of message is replaced (by another valid value, by a value of another
JSON type, or removed), or any bit pattern of any signature byte is flipped; verification must then
refuse the envelope. Where the changed message would still pass every field rule, the refusal must
be the signature's (``signature_invalid``): the signature covers every field.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from cbdc.domain.errors import CbdcError
from cbdc.domain.keys import KeyPair
from cbdc.domain.messages import (
    KINDS,
    MEMO_LENGTH_MAX,
    RECEIPT_KINDS,
    REFERENCE_LENGTH_MAX,
    format_time,
    validate_message,
    verify_envelope,
)
from tests.unit.samples import sample_envelopes, verifier_key

SAMPLES = sample_envelopes()
ABSENT = object()
ID_FIELDS = {"ledger_id", "payment_id", "payer", "payee", "request_id", "code_id", "capture_id",
             "refund_id", "merchant", "receipt_for"}
COUNTER_FIELDS = {"amount_fen", "max_amount_fen", "sequence", "entry_seq"}
TIME_FIELDS = {"created_at", "expires_at", "settled_at"}
TEXT = st.characters(
    blacklist_categories=("Cc", "Cs"),
    blacklist_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(TEXT, max_size=8),
)


def valid_values(name: str) -> st.SearchStrategy[Any]:
    """Values that pass the field's own rule, so only the signature can catch the change."""
    if name in ID_FIELDS:
        return st.from_regex(r"\A[A-Za-z0-9._:-]{1,64}\Z")
    if name in COUNTER_FIELDS:
        return st.integers(1, 2**53 - 1)
    if name in TIME_FIELDS:
        return st.datetimes(timezones=st.just(UTC)).map(format_time)
    if name == "memo":
        return st.text(TEXT, min_size=1, max_size=MEMO_LENGTH_MAX)
    if name == "reference":
        return st.text(TEXT, min_size=1, max_size=REFERENCE_LENGTH_MAX)
    if name == "public_key":
        keys = st.binary(min_size=32, max_size=32).map(KeyPair.from_seed)
        return keys.map(lambda key: key.public_key_hex)
    if name == "entry_hash":
        return st.binary(min_size=32, max_size=32).map(bytes.hex)
    if name == "kind":
        return st.sampled_from(RECEIPT_KINDS)
    if name == "domain":
        return st.sampled_from(sorted(KINDS))
    constants: dict[str, list[Any]] = {"version": [1], "currency": ["CNY"]}
    return st.sampled_from(constants[name])


def same(left: object, right: object) -> bool:
    return type(left) is type(right) and left == right


@given(data=st.data())
def test_changing_any_single_field_breaks_verification(data: st.DataObject) -> None:
    domain = data.draw(st.sampled_from(sorted(KINDS)), label="domain")
    envelope = SAMPLES[domain]
    name = data.draw(st.sampled_from(sorted(envelope["message"])), label="field")
    original = envelope["message"][name]
    # Mostly values the field rules accept, so the signature is what must catch the change.
    kinds_of_change = st.sampled_from(["valid", "valid", "valid", "other type", "removed"])
    change = data.draw(kinds_of_change, label="change")
    values = {"valid": valid_values(name), "other type": JSON_SCALARS, "removed": st.just(ABSENT)}
    replacement = data.draw(
        values[change].filter(lambda value: not same(value, original)), label="replacement"
    )
    message = dict(envelope["message"])
    if replacement is ABSENT:
        del message[name]
    else:
        message[name] = replacement
    tampered = {"message": message, "signature": envelope["signature"]}
    with pytest.raises(CbdcError) as caught:
        verify_envelope(tampered, domain, public_key_hex=verifier_key(domain))
    try:
        validate_message(message, domain)
    except CbdcError:
        event("refused by a field rule")
        return
    event("refused by the signature")
    assert caught.value.code == "signature_invalid"


@given(domain=st.sampled_from(sorted(KINDS)), extra=st.from_regex(r"\A[a-z_]{1,20}\Z"),
       value=JSON_SCALARS)
def test_adding_a_field_breaks_verification(domain: str, extra: str, value: object) -> None:
    envelope = SAMPLES[domain]
    message = dict(envelope["message"])
    if extra in message:
        return
    message[extra] = value
    with pytest.raises(CbdcError):
        verify_envelope({"message": message, "signature": envelope["signature"]}, domain,
                        public_key_hex=verifier_key(domain))


@given(domain=st.sampled_from(sorted(KINDS)), index=st.integers(0, 63), mask=st.integers(1, 255))
def test_changing_any_signature_byte_breaks_verification(
    domain: str, index: int, mask: int
) -> None:
    envelope = SAMPLES[domain]
    signature = bytearray.fromhex(envelope["signature"])
    signature[index] ^= mask
    tampered = {"message": envelope["message"], "signature": signature.hex()}
    with pytest.raises(CbdcError) as caught:
        verify_envelope(tampered, domain, public_key_hex=verifier_key(domain))
    assert caught.value.code == "signature_invalid"
