"""The signed messages of the offline protocol: their exact fields, validation, signing, hashing.

Every message is a flat JSON object with ``version`` 1 and ``domain`` set to its tag; it is
signed over ``tag || 0x00 || JCS(message)`` by :mod:`cbdc.domain.signing` and travels in an
envelope ``{"message": ..., "signature": "<128 hex>"}`` (offline payments add the payer's
certificates, see :mod:`cbdc.offline.verification`). A message's hash, used as the payment's
identity and in the payer's hash chain, is ``sha256`` of exactly its signed bytes.

The kinds are :class:`cbdc.domain.messages.MessageKind` values validated by the same engine as
the online messages, so the order of checks and the error codes are the ones of
docs/protocol.md (``envelope_invalid``, ``version_unsupported``, ``domain_invalid``,
``field_missing``, ``field_unknown``, ``field_invalid``, ``amount_invalid``,
``currency_unsupported``, ``public_key_invalid``). No offline message names its own signer
(``signer_field`` is ``None``): the verifier supplies the key from the certificate chain.
docs/offline-protocol.md is the normative description.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import nacl.signing

from cbdc.domain import signing
from cbdc.domain.errors import FieldInvalid
from cbdc.domain.messages import (
    COUNTER_MAX,
    CURRENCY,
    PROTOCOL_VERSION,
    MessageKind,
    check_amount_field,
    check_counter,
    check_currency,
    check_envelope,
    check_hash,
    check_id,
    check_int,
    check_public_key_field,
    check_time,
    format_time,
    parse_time,
    validate_message,
)
from cbdc.domain.money import AMOUNT_FEN_MAX

__all__ = [
    "CERTIFICATE",
    "CURRENCY",
    "LOAD_RECEIPT",
    "OFFLINE_PAYMENT",
    "REVOCATION_LIST",
    "SYNC_RECEIPT",
    "UNLOAD",
    "VERSION",
    "ZERO_HASH",
    "format_time",
    "message_hash",
    "open_envelope",
    "parse_time",
    "seal",
    "validate",
    "verify_envelope",
]

VERSION = PROTOCOL_VERSION
CERTIFICATE = "cbdc/v1/certificate"
LOAD_RECEIPT = "cbdc/v1/load-receipt"
OFFLINE_PAYMENT = "cbdc/v1/offline-payment"
UNLOAD = "cbdc/v1/unload"
REVOCATION_LIST = "cbdc/v1/revocation-list"
SYNC_RECEIPT = "cbdc/v1/sync-receipt"
#: ``prev_hash`` of a device's first payment, and ``last_payment_hash`` before any payment.
ZERO_HASH = "0" * 64
ROLE_OPERATOR = "operator"
ROLE_DEVICE = "device"
#: Wallet classes: 1 (in person, full KYC) to 4 (anonymous, phone only).
WALLET_CLASS_MIN, WALLET_CLASS_MAX = 1, 4
LIST_LENGTH_MAX = 100_000

FieldCheck = Callable[[str, object], None]


# --- field checks -------------------------------------------------------------------------


def _header(name: str, value: object) -> None:
    """``version`` and ``domain`` are checked by the engine before the field set."""


def _count(name: str, value: object) -> None:
    check_int(name, value, minimum=0, maximum=COUNTER_MAX)


def _amount_or_zero(name: str, value: object) -> None:
    """A total or a returned balance, which may be zero (an unload of an empty device)."""
    check_int(name, value, minimum=0, maximum=AMOUNT_FEN_MAX)


def _wallet_class(name: str, value: object) -> None:
    check_int(name, value, minimum=WALLET_CLASS_MIN, maximum=WALLET_CLASS_MAX)


def _role(expected: str) -> FieldCheck:
    def check(name: str, value: object) -> None:
        if value != expected:
            raise FieldInvalid(f"{name} must be {expected!r}, got {value!r}", field=name)

    return check


def _sorted_unique(item: FieldCheck) -> FieldCheck:
    def check(name: str, value: object) -> None:
        if not isinstance(value, list) or len(value) > LIST_LENGTH_MAX:
            raise FieldInvalid(f"{name} must be a list of at most {LIST_LENGTH_MAX}", field=name)
        for element in value:
            item(name, element)
        if value != sorted(set(value)):
            raise FieldInvalid(f"{name} must be sorted ascending, without duplicates", field=name)

    return check


# --- cross-field rules --------------------------------------------------------------------


def _window(message: Mapping[str, Any]) -> None:
    if parse_time(message["not_after"]) <= parse_time(message["not_before"]):
        raise FieldInvalid("not_after must be after not_before", field="not_after")


def _payment_cap_within_balance_cap(message: Mapping[str, Any]) -> None:
    if message["offline_payment_fen_max"] > message["offline_balance_fen_max"]:
        raise FieldInvalid(
            "offline_payment_fen_max must not exceed offline_balance_fen_max",
            field="offline_payment_fen_max",
        )


def _unload_adds_up(message: Mapping[str, Any]) -> None:
    if message["paid_fen_total"] + message["amount_fen"] > message["loaded_fen_total"]:
        raise FieldInvalid(
            "paid_fen_total + amount_fen exceeds loaded_fen_total", field="amount_fen"
        )


def _since_sync_within_counter(message: Mapping[str, Any]) -> None:
    if message["payments_since_sync"] > message["counter"]:
        raise FieldInvalid("payments_since_sync cannot exceed counter", field="payments_since_sync")


# --- kinds --------------------------------------------------------------------------------

_HEADER: dict[str, FieldCheck] = {"version": _header, "domain": _header, "ledger_id": check_id}
_CERTIFICATE: dict[str, FieldCheck] = {
    **_HEADER,
    "serial": check_id,
    "subject": check_id,
    "public_key": check_public_key_field,
    "issuer": check_id,
    "issuer_key": check_public_key_field,
    "not_before": check_time,
    "not_after": check_time,
}

OPERATOR_CERTIFICATE_KIND = MessageKind(
    CERTIFICATE,
    required={**_CERTIFICATE, "role": _role(ROLE_OPERATOR)},
    cross_checks=(_window,),
    signer_field=None,
)
DEVICE_CERTIFICATE_KIND = MessageKind(
    CERTIFICATE,
    required={
        **_CERTIFICATE,
        "role": _role(ROLE_DEVICE),
        "wallet": check_id,
        "wallet_class": _wallet_class,
        "offline_balance_fen_max": check_amount_field,
        "offline_payment_fen_max": check_amount_field,
        "offline_payments_max": check_counter,
    },
    cross_checks=(_window, _payment_cap_within_balance_cap),
    signer_field=None,
)
LOAD_RECEIPT_KIND = MessageKind(
    LOAD_RECEIPT,
    required={
        **_HEADER,
        "load_id": check_id,
        "operator": check_id,
        "device": check_id,
        "wallet": check_id,
        "amount_fen": check_amount_field,
        "currency": check_currency,
        "load_counter": check_counter,
        "created_at": check_time,
    },
    signer_field=None,
)
OFFLINE_PAYMENT_KIND = MessageKind(
    OFFLINE_PAYMENT,
    required={
        **_HEADER,
        "payer_device": check_id,
        "payer_wallet": check_id,
        "counter": check_counter,
        "load_counter": check_counter,
        "payments_since_sync": check_counter,
        "payee_device": check_id,
        "payee_wallet": check_id,
        "amount_fen": check_amount_field,
        "currency": check_currency,
        "created_at": check_time,
        "prev_hash": check_hash,
    },
    cross_checks=(_since_sync_within_counter,),
    signer_field=None,
)
UNLOAD_KIND = MessageKind(
    UNLOAD,
    required={
        **_HEADER,
        "device": check_id,
        "wallet": check_id,
        "unload_counter": check_counter,
        "counter": _count,
        "last_payment_hash": check_hash,
        "load_counter": _count,
        "loaded_fen_total": _amount_or_zero,
        "paid_fen_total": _amount_or_zero,
        "amount_fen": _amount_or_zero,
        "currency": check_currency,
        "created_at": check_time,
    },
    cross_checks=(_unload_adds_up,),
    signer_field=None,
)
REVOCATION_LIST_KIND = MessageKind(
    REVOCATION_LIST,
    required={
        **_HEADER,
        "issuer": check_id,
        "number": check_counter,
        "issued_at": check_time,
        "revoked": _sorted_unique(check_id),
    },
    signer_field=None,
)
SYNC_RECEIPT_KIND = MessageKind(
    SYNC_RECEIPT,
    required={
        **_HEADER,
        "sync_id": check_id,
        "operator": check_id,
        "device": check_id,
        "synced_counter": _count,
        "settled": _sorted_unique(check_hash),
        "created_at": check_time,
    },
    signer_field=None,
)

_KINDS: dict[str, MessageKind] = {
    kind.domain: kind
    for kind in (
        LOAD_RECEIPT_KIND,
        OFFLINE_PAYMENT_KIND,
        UNLOAD_KIND,
        REVOCATION_LIST_KIND,
        SYNC_RECEIPT_KIND,
    )
}


# --- validation ---------------------------------------------------------------------------


def validate(tag: str, message: Any) -> dict[str, Any]:
    """Return a plain copy of ``message`` if it is a well-formed offline message of ``tag``.

    The order is the engine's (cbdc.domain.messages): object, version, domain, missing fields,
    unknown fields, each field in name order, then cross-field rules. A certificate's schema
    depends on its ``role``: anything but ``"device"`` is judged as an operator certificate.
    """
    return validate_message(message, _kind(tag, message))


def _kind(tag: str, message: Any) -> MessageKind:
    if tag != CERTIFICATE:
        return _KINDS[tag]
    role = message.get("role") if isinstance(message, Mapping) else None
    return DEVICE_CERTIFICATE_KIND if role == ROLE_DEVICE else OPERATOR_CERTIFICATE_KIND


# --- envelopes, signing, hashing ----------------------------------------------------------


def message_hash(tag: str, message: Mapping[str, Any]) -> str:
    """sha256 hex of exactly the signed bytes: the stable identity of a signed message."""
    return hashlib.sha256(signing.signed_bytes(tag, message)).hexdigest()


def seal(
    signing_key: nacl.signing.SigningKey, tag: str, message: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate ``message``, sign it under ``tag`` and wrap it in an envelope."""
    plain = validate(tag, message)
    return {"message": plain, "signature": signing.sign(signing_key, tag, plain).hex()}


def open_envelope(tag: str, envelope: Any) -> tuple[dict[str, Any], bytes]:
    """The validated message and raw signature of an envelope (signature not yet verified)."""
    message, signature = check_envelope(envelope)
    return validate(tag, message), signature


def verify_envelope(tag: str, envelope: Any, public_key: bytes) -> dict[str, Any]:
    """Open ``envelope`` and check its signature by ``public_key``; return the message."""
    message, signature = open_envelope(tag, envelope)
    signing.verify(public_key, tag, message, signature)
    return message
