"""One valid signed envelope of every message kind, built with the wallet client, for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cbdc.client import (
    LedgerKey,
    WalletKey,
    build_capture,
    build_payment,
    build_payment_code,
    build_payment_request,
    build_refund,
    sign_receipt,
)
from cbdc.domain.messages import (
    CAPTURE,
    PAYMENT,
    PAYMENT_CODE,
    PAYMENT_REQUEST,
    RECEIPT,
    REFUND,
    Envelope,
)

MORNING = datetime(2026, 5, 4, 1, 30, tzinfo=UTC)
CUSTOMER = WalletKey.derive(b"unit tests", "customer")
MERCHANT = WalletKey.derive(b"unit tests", "noodle shop")
LEDGER = LedgerKey.from_seed(bytes(range(32)))
LEDGER_ID = "cn-pilot-sz"


def sample_envelopes() -> dict[str, Envelope]:
    """Domain tag -> a valid envelope; the payment carries both optional fields."""
    return {
        PAYMENT: build_payment(
            CUSTOMER, ledger_id=LEDGER_ID, payment_id="pay-1", payer="w-customer",
            payee="w-noodle-shop", amount_fen=2_800, sequence=7, created_at=MORNING,
            request_id="req-1", memo="牛肉面 ×2",
        ),
        PAYMENT_REQUEST: build_payment_request(
            MERCHANT, ledger_id=LEDGER_ID, request_id="req-1", merchant="w-noodle-shop",
            amount_fen=2_800, reference="桌 3", created_at=MORNING,
            expires_at=MORNING + timedelta(minutes=5),
        ),
        PAYMENT_CODE: build_payment_code(
            CUSTOMER, ledger_id=LEDGER_ID, code_id="code-1", payer="w-customer",
            max_amount_fen=10_000, created_at=MORNING, expires_at=MORNING + timedelta(minutes=1),
            merchant="w-noodle-shop",
        ),
        CAPTURE: build_capture(
            MERCHANT, ledger_id=LEDGER_ID, capture_id="cap-1", code_id="code-1",
            merchant="w-noodle-shop", amount_fen=2_800, created_at=MORNING,
        ),
        REFUND: build_refund(
            MERCHANT, ledger_id=LEDGER_ID, refund_id="ref-1", payment_id="pay-1",
            merchant="w-noodle-shop", amount_fen=1_400, created_at=MORNING + timedelta(hours=1),
        ),
        RECEIPT: sign_receipt(
            LEDGER, ledger_id=LEDGER_ID, receipt_for="pay-1", kind="payment", payer="w-customer",
            payee="w-noodle-shop", amount_fen=2_800, entry_seq=12, entry_hash="7f" * 32,
            settled_at=MORNING,
        ),
    }


def verifier_key(domain: str) -> str | None:
    """The key a verifier supplies: the ledger's for receipts, else the message's own."""
    return LEDGER.public_key_hex if domain == RECEIPT else None
