"""How signed messages are stored: a message's text kept in its row and the fingerprint its
repeats are recognised by are sorted-key, ASCII-escaped JSON, whether or not the message was all
ASCII; a receipt is stored as the canonical JSON of the very envelope handed out."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from cbdc.client import build_payment
from cbdc.domain.messages import PAYMENT, prepare_envelope
from cbdc.domain.postings import canonical_json
from cbdc.domain.receipts import receipt_message, sign_receipt_json, verify_receipt
from cbdc.services.payments import signed
from tests.unit.samples import CUSTOMER, LEDGER, LEDGER_ID, MORNING


@pytest.mark.parametrize("memo", [None, "lunch", "早餐 ☕ for two", "café \\ \"quoted\""])
def test_the_stored_text_and_fingerprint_are_the_escaped_canonical_json(memo: str | None) -> None:
    envelope = build_payment(
        CUSTOMER, ledger_id=LEDGER_ID, payment_id="pay-1", payer="p1", payee="m1",
        amount_fen=2_350, sequence=1, created_at=MORNING, memo=memo,
    )
    prepared = prepare_envelope(envelope, PAYMENT)
    stored = signed(prepared, envelope)
    expected = canonical_json(envelope["message"])
    assert stored.message_json.encode("ascii") == expected
    assert stored.message_hash == hashlib.sha256(expected).hexdigest()
    assert stored.signature == envelope["signature"]
    if memo is not None and not memo.isascii():
        assert prepared.message_jcs() != expected  # the signed JCS keeps the characters as UTF-8


@pytest.mark.parametrize("kind", ["payment", "capture", "refund"])
def test_a_stored_receipt_is_the_canonical_json_of_the_envelope_handed_out(kind: str) -> None:
    envelope, text = sign_receipt_json(LEDGER, receipt_message(
        ledger_id=LEDGER_ID, receipt_for=f"{kind}-9", kind=kind, payer="p12", payee="m3",
        amount_fen=99_999, entry_seq=123_456, entry_hash="7f" * 32,
        settled_at=MORNING + timedelta(microseconds=1),
    ))
    assert text == canonical_json(envelope).decode("ascii")
    assert json.loads(text) == envelope
    assert verify_receipt(json.loads(text), LEDGER.public_key_hex) == envelope["message"]


@pytest.mark.parametrize("memo", [None, "早餐 ☕"])
def test_a_stored_envelope_is_the_canonical_json_of_the_envelope_received(
    memo: str | None,
) -> None:
    envelope = build_payment(
        CUSTOMER, ledger_id=LEDGER_ID, payment_id="pay-2", payer="p1", payee="m1",
        amount_fen=100, sequence=2, created_at=MORNING, memo=memo,
    )
    stored = signed(prepare_envelope(envelope, PAYMENT), envelope)
    assert stored.envelope_json() == canonical_json(envelope).decode("ascii")
