"""Builders of signed envelopes, one per message kind a wallet signs.

Each builder assembles the message with ``version``, ``domain``, ``currency`` and the signer's
``public_key`` filled in, formats the times, validates the result with the same rules the ledger
applies (so a bad argument fails here, with the ledger's error code) and signs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from cbdc.domain.messages import (
    CAPTURE,
    CURRENCY,
    PAYMENT,
    PAYMENT_CODE,
    PAYMENT_REQUEST,
    PROTOCOL_VERSION,
    REFUND,
    Envelope,
    Message,
    format_time,
)


class Sealer(Protocol):
    """What a builder needs of a key: its public key, and sealing a message with it. A
    :class:`~cbdc.domain.keys.KeyPair` signs at once; a caller may also hand in a key that
    validates at once and signs later (the simulation's wallets do)."""

    @property
    def public_key_hex(self) -> str: ...

    def seal(self, message: Mapping[str, Any]) -> Envelope: ...


def _seal(key: Sealer, domain: str, fields: dict[str, Any], **optional: Any) -> Envelope:
    message: dict[str, Any] = {
        "version": PROTOCOL_VERSION,
        "domain": domain,
        **fields,
        "public_key": key.public_key_hex,
    }
    message.update({name: value for name, value in optional.items() if value is not None})
    return key.seal(message)


def build_payment(
    key: Sealer,
    *,
    ledger_id: str,
    payment_id: str,
    payer: str,
    payee: str,
    amount_fen: int,
    sequence: int,
    created_at: datetime,
    request_id: str | None = None,
    memo: str | None = None,
) -> Envelope:
    """A payment from ``payer`` to ``payee``, signed by the payer's key."""
    fields = {
        "ledger_id": ledger_id, "payment_id": payment_id, "payer": payer, "payee": payee,
        "amount_fen": amount_fen, "currency": CURRENCY, "sequence": sequence,
        "created_at": format_time(created_at),
    }
    return _seal(key, PAYMENT, fields, request_id=request_id, memo=memo)


def build_payment_for_request(
    key: Sealer,
    request: Message,
    *,
    payment_id: str,
    payer: str,
    sequence: int,
    created_at: datetime,
    memo: str | None = None,
) -> Envelope:
    """Pay a merchant's (already verified) payment request: its merchant, amount and id."""
    return build_payment(
        key,
        ledger_id=request["ledger_id"],
        payment_id=payment_id,
        payer=payer,
        payee=request["merchant"],
        amount_fen=request["amount_fen"],
        sequence=sequence,
        created_at=created_at,
        request_id=request["request_id"],
        memo=memo,
    )


def build_payment_request(
    key: Sealer,
    *,
    ledger_id: str,
    request_id: str,
    merchant: str,
    amount_fen: int,
    reference: str,
    expires_at: datetime,
    created_at: datetime,
) -> Envelope:
    """A merchant-presented collection code, signed by the merchant wallet's key."""
    fields = {
        "ledger_id": ledger_id, "request_id": request_id, "merchant": merchant,
        "amount_fen": amount_fen, "currency": CURRENCY, "reference": reference,
        "expires_at": format_time(expires_at), "created_at": format_time(created_at),
    }
    return _seal(key, PAYMENT_REQUEST, fields)


def build_payment_code(
    key: Sealer,
    *,
    ledger_id: str,
    code_id: str,
    payer: str,
    max_amount_fen: int,
    expires_at: datetime,
    created_at: datetime,
    merchant: str | None = None,
) -> Envelope:
    """A customer-presented one-time payment code, signed by the payer's key."""
    fields = {
        "ledger_id": ledger_id, "code_id": code_id, "payer": payer,
        "max_amount_fen": max_amount_fen, "currency": CURRENCY,
        "expires_at": format_time(expires_at), "created_at": format_time(created_at),
    }
    return _seal(key, PAYMENT_CODE, fields, merchant=merchant)


def build_capture(
    key: Sealer,
    *,
    ledger_id: str,
    capture_id: str,
    code_id: str,
    merchant: str,
    amount_fen: int,
    created_at: datetime,
) -> Envelope:
    """A merchant's capture of a scanned payment code, signed by the merchant's key."""
    fields = {
        "ledger_id": ledger_id, "capture_id": capture_id, "code_id": code_id,
        "merchant": merchant, "amount_fen": amount_fen, "currency": CURRENCY,
        "created_at": format_time(created_at),
    }
    return _seal(key, CAPTURE, fields)


def build_refund(
    key: Sealer,
    *,
    ledger_id: str,
    refund_id: str,
    payment_id: str,
    merchant: str,
    amount_fen: int,
    created_at: datetime,
) -> Envelope:
    """A merchant's (possibly partial) refund of a payment or capture, signed by the merchant."""
    fields = {
        "ledger_id": ledger_id, "refund_id": refund_id, "payment_id": payment_id,
        "merchant": merchant, "amount_fen": amount_fen, "currency": CURRENCY,
        "created_at": format_time(created_at),
    }
    return _seal(key, REFUND, fields)
