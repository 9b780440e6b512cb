"""Merchant flows: payment requests (merchant-presented QR), payment codes (customer-presented
QR, captured by the merchant) and refunds.

**Payment request.** The merchant signs a ``cbdc/v1/payment-request``; the ledger records it and
hands back the QR text (:func:`cbdc.domain.qr.encode_qr`). A payer pays it with an ordinary
signed payment naming ``request_id`` (:mod:`cbdc.services.payments`): once, before expiry, the
exact amount, to that merchant. Checks: message, signature, ledger id, merchant wallet exists,
repeat (same request: the record; other content: ``payment_request_conflict``), merchant key,
merchant active, merchant is a merchant (``not_a_merchant``: a corporate wallet with a merchant
category code), not already expired (``payment_request_expired``).

**Payment code.** The payer's app signs a short-lived ``cbdc/v1/payment-code`` (up to an amount,
optionally for one merchant); the merchant scans it and submits it with its own signed
``cbdc/v1/capture``. Checks: both messages and signatures, ledger ids, the capture names the
code, its merchant (if the code names one) and pays someone else (``capture_mismatch``), the
amount is within the code's maximum (``payment_code_amount_exceeded``); then, locked: wallets
exist, repeat (``capture_conflict``), code unused (``payment_code_used``, forever: the code id
is unique in the database), payer's key then merchant's key (as for payments), payer then
merchant active, code unexpired (``payment_code_expired``), then payer caps, merchant balance
cap (waterfall) and funds (reverse waterfall), exactly as a payment.

**Refund.** The merchant signs a ``cbdc/v1/refund`` of a payment or capture it received. Checks:
message, signature, ledger id; the original exists (``payment_not_found``), is not itself a refund
(``refund_invalid``) and was paid to this merchant (``refund_mismatch``); locked: repeat
(``refund_conflict``), merchant key, amount within what is left to refund
(``refund_exceeds_payment``; the database CHECK ``refunded_fen <= amount_fen`` refuses it too),
merchant then customer active, customer balance cap (waterfall to the customer's bank, else
``balance_limit_exceeded``), merchant funds (``insufficient_funds``: no reverse waterfall for
refunds). A refund does not count against the merchant's outgoing caps, and does not give the
customer back spending headroom.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from cbdc.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound, StatusRefused
from cbdc.domain.messages import (
    CAPTURE,
    PAYMENT_CODE,
    PAYMENT_REQUEST,
    REFUND,
    Envelope,
    Message,
    parse_time,
    verify_envelope,
)
from cbdc.domain.postings import canonical_json
from cbdc.domain.qr import encode_qr
from cbdc.domain.settlement import plan_transfer
from cbdc.services.context import LedgerContext
from cbdc.services.payments import (
    Settlement,
    Signed,
    answer_after_race,
    as_utc,
    check_ledger,
    check_signing_key,
    recorded,
    settle,
    signed,
)
from cbdc.services.wallets import check_active, party
from cbdc.storage.payments import add_refunded
from cbdc.storage.tables import payment_codes, payment_requests, payments, wallets
from cbdc.storage.wallets import WalletRow, load_key, load_keys, load_wallet, load_wallets


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    request_id: str
    merchant: str
    amount_fen: int
    reference: str
    expires_at: datetime
    status: str
    envelope: Envelope
    qr: str


def create_payment_request(context: LedgerContext, envelope: Mapping[str, Any]) -> PaymentRequest:
    """Record a merchant-signed payment request; return it with its QR text."""
    message = verify_envelope(envelope, PAYMENT_REQUEST)
    check_ledger(context, message)
    digest = signed(message, envelope).message_hash
    with context.write() as connection:
        merchant = load_wallet(connection, message["merchant"], lock=True)
        key = load_key(connection, message["public_key"], lock=True)
        existing = _find_request(connection, message["request_id"])
        if existing is not None:
            if signed(existing.envelope["message"], existing.envelope).message_hash != digest:
                raise Conflict(f"payment request {message['request_id']} exists with other "
                               "content", code="payment_request_conflict")
            return existing
        key = check_signing_key(key, merchant)
        check_active(merchant)
        check_merchant(merchant)
        expires_at = parse_time(message["expires_at"], field_name="expires_at")
        if context.now() >= expires_at:
            raise StatusRefused("the payment request has already expired",
                                code="payment_request_expired")
        stored = {"message": message, "signature": envelope["signature"]}
        connection.execute(
            insert(payment_requests).values(
                request_id=message["request_id"],
                merchant_wallet_id=merchant.id,
                key_id=key.id,
                amount_fen=message["amount_fen"],
                reference=message["reference"],
                expires_at=expires_at,
                message_hash=digest,
                envelope_json=canonical_json(stored).decode("ascii"),
                status="open",
                created_at=context.now(),
            )
        )
        found = _find_request(connection, message["request_id"])
        assert found is not None
        return found


def get_payment_request(context: LedgerContext, request_id: str) -> PaymentRequest:
    with context.read() as connection:
        found = _find_request(connection, request_id)
    if found is None:
        raise NotFound(f"no payment request {request_id!r}", code="payment_request_not_found")
    return found


def _find_request(connection: Connection, request_id: str) -> PaymentRequest | None:
    row = connection.execute(
        select(payment_requests, wallets.c.wallet_id.label("merchant"))
        .join(wallets, wallets.c.id == payment_requests.c.merchant_wallet_id)
        .where(payment_requests.c.request_id == request_id)
    ).first()
    if row is None:
        return None
    envelope: Envelope = json.loads(row.envelope_json)
    return PaymentRequest(
        request_id=row.request_id,
        merchant=row.merchant,
        amount_fen=row.amount_fen,
        reference=row.reference,
        expires_at=as_utc(row.expires_at),
        status=row.status,
        envelope=envelope,
        qr=encode_qr(envelope),
    )


def check_merchant(wallet: WalletRow) -> None:
    if wallet.merchant_category_code is None:
        raise Forbidden(f"wallet {wallet.wallet_id} is not a merchant wallet",
                        code="not_a_merchant")


def capture_payment_code(
    context: LedgerContext,
    code_envelope: Mapping[str, Any],
    capture_envelope: Mapping[str, Any],
) -> Settlement:
    """The merchant captures a customer's payment code, once, within its expiry and maximum."""
    code = verify_envelope(code_envelope, PAYMENT_CODE)
    capture = verify_envelope(capture_envelope, CAPTURE)
    check_ledger(context, code)
    check_ledger(context, capture)
    _check_capture_matches(code, capture)
    signed_code, signed_capture = signed(code, code_envelope), signed(capture, capture_envelope)
    try:
        with context.write() as connection:
            return _capture(context, connection, signed_code, signed_capture)
    except IntegrityError:
        return answer_after_race(context, capture["capture_id"], signed_capture.message_hash,
                                 "capture")


def _check_capture_matches(code: Message, capture: Message) -> None:
    if capture["code_id"] != code["code_id"]:
        raise InvalidRequest("the capture names another payment code", code="capture_mismatch",
                             field="code_id")
    if code.get("merchant", capture["merchant"]) != capture["merchant"]:
        raise InvalidRequest("the payment code is for another merchant", code="capture_mismatch",
                             field="merchant")
    if capture["merchant"] == code["payer"]:
        raise InvalidRequest("a wallet cannot pay itself", code="payee_invalid",
                             field="merchant")
    if capture["amount_fen"] > code["max_amount_fen"]:
        raise InvalidRequest(
            f"{capture['amount_fen']} fen is above the code's maximum {code['max_amount_fen']}",
            code="payment_code_amount_exceeded",
            field="amount_fen",
        )


def _capture(
    context: LedgerContext, connection: Connection, signed_code: Signed, signed_capture: Signed
) -> Settlement:
    code, capture = signed_code.message, signed_capture.message
    rows = load_wallets(connection, [code["payer"], capture["merchant"]], lock=True)
    payer, merchant = rows[code["payer"]], rows[capture["merchant"]]
    keys = load_keys(connection, [code["public_key"], capture["public_key"]], lock=True)
    first = recorded(connection, capture["capture_id"], signed_capture.message_hash, "capture")
    if first is not None:
        return first
    used = connection.execute(
        select(payment_codes.c.id).where(payment_codes.c.code_id == code["code_id"])
    ).first()
    if used is not None:
        raise Conflict(f"payment code {code['code_id']} was already captured",
                       code="payment_code_used")
    payer_key = check_signing_key(keys.get(code["public_key"]), payer)
    merchant_key = check_signing_key(keys.get(capture["public_key"]), merchant)
    check_active(payer)
    check_active(merchant)
    now = context.now()
    expires_at = parse_time(code["expires_at"], field_name="expires_at")
    if now >= expires_at:
        raise StatusRefused(f"payment code {code['code_id']} has expired",
                            code="payment_code_expired")
    plan = plan_transfer(party(context, payer, now), party(context, merchant, now),
                         capture["amount_fen"])
    settlement, payment_row_id = settle(
        context, connection, kind="capture", payment_id=capture["capture_id"], payer=payer,
        payee=merchant, plan=plan, key=merchant_key, signed=signed_capture,
    )
    connection.execute(
        insert(payment_codes).values(
            code_id=code["code_id"],
            payer_wallet_id=payer.id,
            merchant_wallet_id=merchant.id if "merchant" in code else None,
            key_id=payer_key.id,
            max_amount_fen=code["max_amount_fen"],
            expires_at=expires_at,
            message_json=signed_code.message_json,
            message_hash=signed_code.message_hash,
            signature=signed_code.signature,
            captured_payment_id=payment_row_id,
            captured_fen=capture["amount_fen"],
        )
    )
    return settlement


def refund(context: LedgerContext, envelope: Mapping[str, Any]) -> Settlement:
    """Settle a merchant-signed refund of (part of) a payment or capture it received."""
    message = verify_envelope(envelope, REFUND)
    check_ledger(context, message)
    signed_refund = signed(message, envelope)
    try:
        with context.write() as connection:
            return _refund(context, connection, signed_refund)
    except IntegrityError:
        return answer_after_race(context, message["refund_id"], signed_refund.message_hash,
                                 "refund")


def _refund(context: LedgerContext, connection: Connection, signed_refund: Signed) -> Settlement:
    message = signed_refund.message
    original = _original(connection, message)
    rows = load_wallets(connection, [original.payer, original.payee], lock=True)
    customer, merchant = rows[original.payer], rows[original.payee]
    key = load_key(connection, message["public_key"], lock=True)
    first = recorded(connection, message["refund_id"], signed_refund.message_hash, "refund")
    if first is not None:
        return first
    key = check_signing_key(key, merchant)
    # Read again under the merchant's lock: every refund of this payment holds it.
    refunded_fen = connection.execute(
        select(payments.c.refunded_fen).where(payments.c.id == original.id)
    ).scalar_one()
    left_fen = original.amount_fen - refunded_fen
    if message["amount_fen"] > left_fen:
        raise StatusRefused(
            f"{message['amount_fen']} fen is more than the {left_fen} fen left to refund of "
            f"{original.payment_id}",
            code="refund_exceeds_payment",
            refundable_fen=left_fen,
        )
    check_active(merchant)
    check_active(customer)
    now = context.now()
    plan = plan_transfer(party(context, merchant, now), party(context, customer, now),
                         message["amount_fen"], counts_as_spending=False,
                         reverse_waterfall_allowed=False)
    settlement, _ = settle(
        context, connection, kind="refund", payment_id=message["refund_id"], payer=merchant,
        payee=customer, plan=plan, key=key, signed=signed_refund, original_id=original.id,
        counts_as_spending=False,
    )
    add_refunded(connection, original.id, message["amount_fen"])
    return settlement


@dataclass(frozen=True, slots=True)
class _Original:
    id: int
    payment_id: str
    payer: str
    payee: str
    amount_fen: int


def _original(connection: Connection, message: Message) -> _Original:
    payers, payees = wallets.alias("payers"), wallets.alias("payees")
    row = connection.execute(
        select(
            payments.c.id,
            payments.c.payment_id,
            payments.c.kind,
            payments.c.amount_fen,
            payers.c.wallet_id.label("payer"),
            payees.c.wallet_id.label("payee"),
        )
        .join(payers, payers.c.id == payments.c.payer_wallet_id)
        .join(payees, payees.c.id == payments.c.payee_wallet_id)
        .where(payments.c.payment_id == message["payment_id"])
    ).first()
    if row is None:
        raise NotFound(f"no payment {message['payment_id']!r}", code="payment_not_found")
    if row.kind == "refund":
        raise InvalidRequest("a refund cannot be refunded", code="refund_invalid")
    if row.payee != message["merchant"]:
        raise Forbidden(f"{row.payment_id} was not paid to {message['merchant']}",
                        code="refund_mismatch")
    return _Original(row.id, row.payment_id, row.payer, row.payee, row.amount_fen)
