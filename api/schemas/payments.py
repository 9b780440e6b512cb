"""Signed payments, batches, merchant payment requests, captures and refunds.

A signed message travels in its envelope ``{"message": {...}, "signature": "<128 hex>"}``. The
schema checks only the envelope's shape: the message's fields are checked by
:mod:`cbdc.domain.messages` in its documented order, so a bad message gets the same code
(``field_missing``, ``signature_invalid``...) over HTTP as anywhere else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from api.schemas.common import RequestModel, ResponseModel, StrictStr, Timestamp, examples

BATCH_SIZE_MAX = 1_000
#: A mixed batch takes fewer items: a capture carries two envelopes, and 500 of them stay well
#: under the API's 1 MiB body limit (a test checks it).
SETTLEMENT_BATCH_SIZE_MAX = 500

_PAYMENT_EXAMPLE = {
    "message": {
        "version": 1, "domain": "cbdc/v1/payment", "ledger_id": "cbdc-local",
        "payment_id": "pay-2026-03-02-0001", "payer": "w-7f3a9c", "payee": "w-shop-42",
        "amount_fen": 2_350, "currency": "CNY",
        "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "sequence": 1, "created_at": "2026-03-02T01:00:00Z",
    },
    "signature": "0" * 128,
}


class SignedEnvelope(RequestModel):
    """A signed message of protocol v1 (docs/protocol.md)."""

    model_config = ConfigDict(json_schema_extra=examples(_PAYMENT_EXAMPLE))

    message: dict[str, Any]
    signature: Annotated[StrictStr, Field(max_length=256)]


class PaymentBatch(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({"payments": [_PAYMENT_EXAMPLE]}))

    payments: Annotated[list[SignedEnvelope], Field(min_length=1, max_length=BATCH_SIZE_MAX)]


class Capture(RequestModel):
    """The customer's payment code and the merchant's capture of it."""

    model_config = ConfigDict(json_schema_extra=examples({
        "payment_code": {"message": {
            "version": 1, "domain": "cbdc/v1/payment-code", "ledger_id": "cbdc-local",
            "code_id": "code-1", "payer": "w-7f3a9c", "max_amount_fen": 10_000,
            "currency": "CNY", "expires_at": "2026-03-02T01:01:00Z",
            "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "created_at": "2026-03-02T01:00:00Z"}, "signature": "0" * 128},
        "capture": {"message": {
            "version": 1, "domain": "cbdc/v1/capture", "ledger_id": "cbdc-local",
            "capture_id": "cap-1", "code_id": "code-1", "merchant": "w-shop-42",
            "amount_fen": 2_350, "currency": "CNY",
            "public_key": "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "created_at": "2026-03-02T01:00:10Z"}, "signature": "0" * 128},
    }))

    payment_code: SignedEnvelope
    capture: SignedEnvelope


class PaymentItem(RequestModel):
    """A signed payment, in a mixed batch."""

    kind: Literal["payment"]
    payment: SignedEnvelope


class CaptureItem(RequestModel):
    """A merchant's capture of a customer's payment code, in a mixed batch."""

    kind: Literal["capture"]
    payment_code: SignedEnvelope
    capture: SignedEnvelope


class RefundItem(RequestModel):
    """A merchant-signed refund, in a mixed batch."""

    kind: Literal["refund"]
    refund: SignedEnvelope


SettlementItem = Annotated[PaymentItem | CaptureItem | RefundItem, Field(discriminator="kind")]


class SettlementBatch(RequestModel):
    """Payments, captures and refunds, settled in this order in one unit of work."""

    model_config = ConfigDict(json_schema_extra=examples(
        {"items": [{"kind": "payment", "payment": _PAYMENT_EXAMPLE}]}))

    items: Annotated[list[SettlementItem],
                     Field(min_length=1, max_length=SETTLEMENT_BATCH_SIZE_MAX)]


class PaymentRequestBatch(RequestModel):
    """Merchant-signed payment requests, recorded in this order in one unit of work."""

    model_config = ConfigDict(json_schema_extra=examples({"requests": [{
        "message": {
            "version": 1, "domain": "cbdc/v1/payment-request", "ledger_id": "cbdc-local",
            "request_id": "req-table-7", "merchant": "w-shop-42", "amount_fen": 4_800,
            "currency": "CNY", "reference": "table 7", "expires_at": "2026-03-02T01:10:00Z",
            "created_at": "2026-03-02T01:00:00Z",
            "public_key": "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"},
        "signature": "0" * 128}]}))

    requests: Annotated[list[SignedEnvelope], Field(min_length=1, max_length=BATCH_SIZE_MAX)]


class Settlement(ResponseModel):
    """A settled payment, capture or refund, with the receipt the ledger signed."""

    payment_id: str
    kind: str
    payer: str
    payee: str
    amount_fen: int
    entry_seq: int
    entry_hash: str
    settled_at: Timestamp
    topped_up_fen: int
    swept_fen: int
    receipt: dict[str, Any]
    replayed: bool


class BatchResult(ResponseModel):
    index: int
    status: int = Field(description="201 settled, or the status of the problem.")
    settlement: Settlement | None = None
    problem: dict[str, Any] | None = None


class BatchResults(ResponseModel):
    settled: int
    refused: int
    results: list[BatchResult]


class PaymentRequest(ResponseModel):
    request_id: str
    merchant: str
    amount_fen: int
    reference: str
    expires_at: Timestamp
    status: str
    envelope: dict[str, Any]
    qr: str = Field(description="`CBDC1:` + base64url of the envelope's JCS: the QR payload.")


class PaymentRequestResult(ResponseModel):
    index: int
    status: int = Field(description="201 recorded, or the status of the problem.")
    payment_request: PaymentRequest | None = None
    problem: dict[str, Any] | None = None


class PaymentRequestResults(ResponseModel):
    created: int
    refused: int
    results: list[PaymentRequestResult]


class LedgerInfo(ResponseModel):
    ledger_id: str
    receipt_public_key: str = Field(description="Verifies the receipts this ledger signs.")
