"""Merchant flows: payment requests (merchant-presented QR), payment codes (customer-presented
QR, captured by the merchant) and refunds.

**Payment request.** The merchant signs a ``cbdc/v1/payment-request``; the ledger records it and
hands back the QR text (:func:`cbdc.domain.qr.encode_qr`). A payer pays it with an ordinary
signed payment naming ``request_id`` (:mod:`cbdc.services.payments`): once, before expiry, the
exact amount, to that merchant. Checks: message, signature, ledger id, merchant wallet exists,
repeat (same request: the record; other content: ``payment_request_conflict``), merchant key,
merchant active, merchant is a merchant (``not_a_merchant``: a corporate wallet with a merchant
category code), not already expired (``payment_request_expired``). Many requests are recorded
in one unit of work by :func:`create_payment_requests`, each answered as if it had come alone.

**Payment code.** The payer's app signs a short-lived ``cbdc/v1/payment-code`` (up to an amount,
optionally for one merchant); the merchant scans it and submits it with its own signed
``cbdc/v1/capture``. Checks: the code's message and signature, then the capture's; the ledger ids
(code, then capture); the capture names the code and its merchant (if the code names one)
(``capture_mismatch``), pays someone else (``payee_invalid``), the amount is within the code's
maximum (``payment_code_amount_exceeded``); then, locked: payer then merchant wallets exist
(``wallet_not_found``), repeat (``capture_conflict``), code unused (``payment_code_used``,
forever: the code id is unique in the database), payer's key then merchant's key (as for
payments), payer then merchant active, the capturing wallet is a merchant (``not_a_merchant``,
as for payment requests), code unexpired (``payment_code_expired``), then payer caps, merchant
balance cap (waterfall) and funds (reverse waterfall), exactly as a payment. Captures settle in
the payments' batches (:func:`cbdc.services.payments.settle_batch`), next to payments.

**Refund.** The merchant signs a ``cbdc/v1/refund`` of a payment or capture it received. Checks:
message, signature, ledger id; the original exists (``payment_not_found``), is not itself a refund
(``refund_invalid``) and was paid to this merchant (``refund_mismatch``); locked: repeat
(``refund_conflict``), merchant key, amount within what is left to refund
(``refund_exceeds_payment``; the database CHECK ``refunded_fen <= amount_fen`` refuses it too),
merchant then customer active, customer balance cap (waterfall to the customer's bank, else
``balance_limit_exceeded``), merchant funds (``insufficient_funds``: no reverse waterfall for
refunds). A refund does not count against the merchant's outgoing caps, and does not give the
customer back spending headroom. Refunds settle in the payments' batches too, next to payments
and captures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection

from cbdc.domain.errors import (
    CbdcError,
    Conflict,
    NotFound,
    StatusRefused,
)
from cbdc.domain.messages import (
    PAYMENT_REQUEST,
    Envelope,
    parse_time,
    prepare_envelope,
)
from cbdc.domain.qr import encode_qr
from cbdc.services.batches import (
    Answers,
    Prepared,
    Verdicts,
    all_verified,
    answer_batch,
    checked_later,
    forged_out,
    only,
)
from cbdc.services.context import LedgerContext
from cbdc.services.payments import (
    CodeCapture,
    MerchantRefund,
    Settlement,
    Signed,
    check_ledger,
    check_signing_key,
    settle_batch,
    signed,
)
from cbdc.services.wallets import check_active, check_merchant
from cbdc.storage.payments import NewRequest, find_requests, insert_requests
from cbdc.storage.wallets import (
    KeyRow,
    WalletRow,
    load_keys,
    load_wallets,
    wallet_not_found,
)


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    request_id: str
    merchant: str
    amount_fen: int
    reference: str
    expires_at: datetime
    status: str
    envelope: Envelope

    @property
    def qr(self) -> str:
        """The text to show as a QR code (made on demand: batches record many requests whose
        QR text nobody reads back)."""
        return encode_qr(self.envelope)


def create_payment_request(context: LedgerContext, envelope: Mapping[str, Any]) -> PaymentRequest:
    """Record a merchant-signed payment request; return it with its QR text."""
    return only(create_payment_requests(context, [envelope]))


def create_payment_requests(
    context: LedgerContext, envelopes: Sequence[Mapping[str, Any]]
) -> list[PaymentRequest | CbdcError]:
    """Record many payment requests in one unit of work, each answered as
    :func:`create_payment_request` would have answered it had they come one by one, in order
    (:mod:`cbdc.services.batches`)."""
    return answer_batch(context, envelopes, partial(_prepare_request, context),
                        partial(_create_requests, context), partial(_request_after_race, context))


@dataclass(frozen=True, slots=True)
class _RequestItem:
    index: int
    signed: Signed


def _prepare_request(
    context: LedgerContext, index: int, envelope: Mapping[str, Any]
) -> Prepared[_RequestItem]:
    prepared = prepare_envelope(envelope, PAYMENT_REQUEST)

    def check() -> _RequestItem:
        check_ledger(context, prepared.message)
        return _RequestItem(index, signed(prepared, envelope))

    return checked_later(index, (prepared,), check)


#: A payment request as recorded (or about to be, in this batch), with its message's fingerprint.
_Known = tuple[str, PaymentRequest]


@dataclass
class _RequestBatch:
    merchants: dict[str, WalletRow]
    keys: dict[str, KeyRow]
    known: dict[str, _Known]
    new_rows: list[NewRequest] = field(default_factory=list)


def _create_requests(
    context: LedgerContext,
    connection: Connection,
    items: list[_RequestItem],
    answers: Answers[PaymentRequest],
    verdicts: Verdicts,
) -> None:
    """Lock the merchants' wallets, then their keys; check each request against what is
    recorded and what the batch has created so far; insert the new ones with one statement."""
    messages = [item.signed.message for item in items]
    batch = _RequestBatch(
        merchants=load_wallets(connection, [m["merchant"] for m in messages], lock=True,
                               require_all=False),
        keys=load_keys(connection, [m["public_key"] for m in messages], lock=True),
        known=_find_requests(connection, {m["request_id"] for m in messages}),
    )
    now = context.now()
    for item in items:
        try:
            answers[item.index] = _check_request(batch, item, now)
        except CbdcError as error:
            answers[item.index] = error
    authentic = forged_out(items, verdicts, answers)
    if authentic is not None:
        _create_requests(context, connection, authentic, answers, all_verified(authentic))
        return
    insert_requests(connection, batch.new_rows)


def _check_request(batch: _RequestBatch, item: _RequestItem, now: datetime) -> PaymentRequest:
    """The checks after the signature, in order; a new request joins the batch's rows."""
    message = item.signed.message
    merchant = batch.merchants.get(message["merchant"])
    if merchant is None:
        raise wallet_not_found(message["merchant"])
    known = batch.known.get(message["request_id"])
    if known is not None:
        return _repeat(known, item)
    key = check_signing_key(batch.keys.get(message["public_key"]), merchant)
    check_active(merchant)
    check_merchant(merchant)
    expires_at = parse_time(message["expires_at"], field_name="expires_at")
    if now >= expires_at:
        raise StatusRefused("the payment request has already expired",
                            code="payment_request_expired")
    stored: Envelope = {"message": message, "signature": item.signed.signature}
    created = PaymentRequest(
        request_id=message["request_id"], merchant=merchant.wallet_id,
        amount_fen=message["amount_fen"], reference=message["reference"],
        expires_at=expires_at, status="open", envelope=stored,
    )
    batch.known[created.request_id] = (item.signed.message_hash, created)
    batch.new_rows.append(NewRequest(
        request_id=created.request_id, merchant_wallet_row_id=merchant.id, key_id=key.id,
        amount_fen=created.amount_fen, reference=created.reference, expires_at=expires_at,
        message_hash=item.signed.message_hash,
        envelope_json=item.signed.envelope_json(), created_at=now,
    ))
    return created


def _repeat(known: _Known, item: _RequestItem) -> PaymentRequest:
    """A request id seen before: the same message is answered with the request as it stands."""
    digest, request = known
    if digest != item.signed.message_hash:
        raise Conflict(f"payment request {request.request_id} exists with other content",
                       code="payment_request_conflict")
    return request


def _request_after_race(context: LedgerContext, item: _RequestItem) -> PaymentRequest:
    request_id = item.signed.message["request_id"]
    with context.read() as connection:
        known = _find_requests(connection, {request_id}).get(request_id)
    assert known is not None  # the request id is the only unique key a new request can break
    return _repeat(known, item)


def get_payment_request(context: LedgerContext, request_id: str) -> PaymentRequest:
    with context.read() as connection:
        found = _find_requests(connection, {request_id}).get(request_id)
    if found is None:
        raise NotFound(f"no payment request {request_id!r}", code="payment_request_not_found")
    return found[1]


def _find_requests(connection: Connection, request_ids: set[str]) -> dict[str, _Known]:
    return {
        request_id: (row.message_hash, PaymentRequest(
            request_id=row.request_id, merchant=row.merchant, amount_fen=row.amount_fen,
            reference=row.reference, expires_at=row.expires_at, status=row.status,
            envelope=json.loads(row.envelope_json),
        ))
        for request_id, row in find_requests(connection, request_ids).items()
    }


def capture_payment_code(
    context: LedgerContext,
    code_envelope: Mapping[str, Any],
    capture_envelope: Mapping[str, Any],
) -> Settlement:
    """The merchant captures a customer's payment code, once, within its expiry and maximum."""
    return only(capture_payment_codes(context, [(code_envelope, capture_envelope)]))


def capture_payment_codes(
    context: LedgerContext, pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]
) -> list[Settlement | CbdcError]:
    """Many captures (payment code, capture) in one unit of work, each answered as if captured
    alone, in order: a batch of :func:`cbdc.services.payments.settle_batch`, which also takes
    payments."""
    return settle_batch(context, [CodeCapture(code, capture) for code, capture in pairs])


def refund(context: LedgerContext, envelope: Mapping[str, Any]) -> Settlement:
    """Settle a merchant-signed refund of (part of) a payment or capture it received: a batch of
    one of :func:`cbdc.services.payments.settle_batch`, where refunds settle next to payments
    and captures."""
    return only(settle_batch(context, [MerchantRefund(envelope)]))
