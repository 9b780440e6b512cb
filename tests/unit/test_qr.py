"""QR payloads: ``CBDC1:`` + unpadded base64url of the JCS envelope, decoded strictly."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbdc.client import build_payment
from cbdc.domain.errors import CbdcError
from cbdc.domain.messages import KINDS, PAYMENT, verify_envelope
from cbdc.domain.qr import QR_PREFIX, decode_qr, encode_qr
from cbdc.domain.signing import canonical
from tests.unit.samples import CUSTOMER, LEDGER_ID, MORNING, sample_envelopes, verifier_key

SAMPLES = sample_envelopes()


def qr_of(payload: bytes) -> str:
    return QR_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("domain", list(KINDS))
def test_round_trip_then_verify(domain: str) -> None:
    text = encode_qr(SAMPLES[domain])
    assert text.startswith("CBDC1:") and "=" not in text
    decoded = decode_qr(text)
    assert decoded == SAMPLES[domain]
    verify_envelope(decoded, domain, public_key_hex=verifier_key(domain))


@given(
    amount_fen=st.integers(1, 2**53 - 1),
    memo=st.text(
        st.characters(blacklist_categories=("Cc", "Cs"),
                      blacklist_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"),
        min_size=1, max_size=140,
    ),
    sequence=st.integers(1, 2**53 - 1),
)
def test_round_trip_of_any_payment(amount_fen: int, memo: str, sequence: int) -> None:
    envelope = build_payment(
        CUSTOMER, ledger_id=LEDGER_ID, payment_id="pay-q", payer="w-a", payee="w-b",
        amount_fen=amount_fen, sequence=sequence, created_at=MORNING, memo=memo,
    )
    text = encode_qr(envelope)
    assert decode_qr(text) == envelope
    assert verify_envelope(decode_qr(text), PAYMENT)["memo"] == memo


def test_payload_is_the_jcs_of_the_envelope() -> None:
    envelope = SAMPLES[PAYMENT]
    assert encode_qr(envelope) == qr_of(canonical(envelope))


def payload() -> bytes:
    return canonical(SAMPLES[PAYMENT])


@pytest.mark.parametrize(
    "text",
    [
        "cbdc1:" + encode_qr(SAMPLES[PAYMENT])[6:],
        "CBDC2:" + encode_qr(SAMPLES[PAYMENT])[6:],
        encode_qr(SAMPLES[PAYMENT]) + "=",
        encode_qr(SAMPLES[PAYMENT]) + "A",  # a length of 1 mod 4 is no base64
        encode_qr(SAMPLES[PAYMENT]).replace("-", "+").replace("_", "/") + "+/",
        qr_of(json.dumps(SAMPLES[PAYMENT]).encode()),  # whitespace, key order: not JCS
        qr_of(payload().replace(b'"signature"', b'"signature":"00","signature"', 1)),
        qr_of(payload().replace(b'"amount_fen":2800', b'"amount_fen":2800.0')),
        qr_of(payload().replace(b'"amount_fen":2800', b'"amount_fen":NaN')),
        qr_of(b"\xff\xfe"),
        qr_of(b"[]"),
        qr_of(b""),
        QR_PREFIX + "A" * 3000,
        "",
    ],
    ids=["lowercase prefix", "other version", "padding", "bad length", "standard alphabet",
         "not canonical", "duplicate key", "float", "NaN", "not UTF-8", "not an object",
         "empty", "too long for a QR code", "empty text"],
)
def test_malformed_qr_is_refused(text: str) -> None:
    with pytest.raises(CbdcError) as caught:
        decode_qr(text)
    assert caught.value.code == "qr_invalid"


def test_non_zero_padding_bits_are_refused() -> None:
    envelope = next(e for e in SAMPLES.values() if len(canonical(e)) % 3)
    text = encode_qr(envelope)
    body = text[len(QR_PREFIX):]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1]
    # A lenient decoder reads the twin as the very same bytes: two texts, one envelope.
    assert base64.urlsafe_b64decode(twin + "==") == canonical(envelope)
    with pytest.raises(CbdcError) as caught:
        decode_qr(QR_PREFIX + twin)
    assert caught.value.code == "qr_invalid"


def test_a_canonical_payload_that_is_no_envelope_gets_the_envelope_code() -> None:
    with pytest.raises(CbdcError) as caught:
        decode_qr(qr_of(b'{"message":{}}'))
    assert caught.value.code == "envelope_invalid"
