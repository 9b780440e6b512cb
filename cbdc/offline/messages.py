"""The signed messages of the offline protocol: their exact fields, validation, signing, hashing.

Every message is a flat JSON object with ``version`` 1 and ``domain`` set to its tag; it is
signed over ``tag || 0x00 || JCS(message)`` by :mod:`cbdc.domain.signing` and travels in an
envelope ``{"message": ..., "signature": "<128 hex>"}`` (offline payments add the payer's
certificates, see :mod:`cbdc.offline.verification`). A message's hash, used as the payment's
identity and in the payer's hash chain, is ``sha256`` of exactly its signed bytes.

Validation is strict and exact: the field set must match the schema of its tag (no missing,
no extra field), so two parties can never disagree on what was signed. Shape errors raise
:class:`~cbdc.domain.errors.InvalidMessage` (``message_invalid``). docs/offline-protocol.md is
the normative description.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import nacl.signing

from cbdc.domain import signing
from cbdc.domain.errors import InvalidAmount, InvalidKey, InvalidMessage
from cbdc.domain.money import AMOUNT_FEN_MAX, check_amount

VERSION = 1
CURRENCY = "CNY"
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
#: Wallet classes, from DOMAIN.md: 1 (in person, full KYC) to 4 (anonymous, phone only).
WALLET_CLASSES = (1, 2, 3, 4)
COUNT_MAX = 2**53 - 1
REVOKED_MAX = 100_000

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")

Checker = Callable[[str, Any], None]


# --- field checks -------------------------------------------------------------------------


def _fail(field: str, why: str) -> InvalidMessage:
    return InvalidMessage(f"field {field!r}: {why}", field=field)


def _check_id(field: str, value: Any) -> None:
    if not isinstance(value, str) or not _ID.match(value):
        raise _fail(field, "must match ^[A-Za-z0-9._:-]{1,64}$")


def _check_hex64(field: str, value: Any) -> None:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise _fail(field, "must be 64 lowercase hex characters")


def _check_public_key(field: str, value: Any) -> None:
    _check_hex64(field, value)
    problem = _public_key_problem(value)
    if problem is not None:
        raise _fail(field, problem)


@functools.lru_cache(maxsize=4096)
def _public_key_problem(public_key_hex: str) -> str | None:
    """Cached: the point check costs about as much as a signature verification, and the same
    few root, operator and device keys arrive with every payment."""
    try:
        signing.check_public_key(bytes.fromhex(public_key_hex))
    except InvalidKey as exc:
        return exc.detail
    return None


def _check_count(field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, "must be an integer")
    if not minimum <= value <= COUNT_MAX:
        raise _fail(field, f"must be between {minimum} and {COUNT_MAX}")


def _check_counter(field: str, value: Any) -> None:
    _check_count(field, value, 1)


def _check_count0(field: str, value: Any) -> None:
    _check_count(field, value, 0)


def _check_amount(field: str, value: Any) -> None:
    try:
        check_amount(value)
    except InvalidAmount as exc:
        raise _fail(field, exc.detail) from exc


def _check_amount0(field: str, value: Any) -> None:
    """An amount that may be zero (an unload of an empty device, a running total)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= AMOUNT_FEN_MAX:
        raise _fail(field, f"must be an integer number of fen from 0 to {AMOUNT_FEN_MAX}")


def _check_time(field: str, value: Any) -> None:
    parse_time(value, field)


def _check_wallet_class(field: str, value: Any) -> None:
    if isinstance(value, bool) or value not in WALLET_CLASSES:
        raise _fail(field, f"must be one of {WALLET_CLASSES}")


def _check_sorted_unique(field: str, value: Any, item: Checker) -> None:
    if not isinstance(value, list) or len(value) > REVOKED_MAX:
        raise _fail(field, f"must be a list of at most {REVOKED_MAX} items")
    for element in value:
        item(field, element)
    if value != sorted(set(value)):
        raise _fail(field, "must be sorted ascending without duplicates")


def _constant(expected: Any) -> Checker:
    def check(field: str, value: Any) -> None:
        if type(value) is not type(expected) or value != expected:
            raise _fail(field, f"must be {expected!r}")

    return check


def _ids(field: str, value: Any) -> None:
    _check_sorted_unique(field, value, _check_id)


def _hashes(field: str, value: Any) -> None:
    _check_sorted_unique(field, value, _check_hex64)


def _common(tag: str) -> dict[str, Checker]:
    return {"version": _constant(VERSION), "domain": _constant(tag), "ledger_id": _check_id}


_CERTIFICATE_COMMON: dict[str, Checker] = {
    **_common(CERTIFICATE),
    "serial": _check_id,
    "subject": _check_id,
    "public_key": _check_public_key,
    "issuer": _check_id,
    "issuer_key": _check_public_key,
    "not_before": _check_time,
    "not_after": _check_time,
}

OPERATOR_CERTIFICATE_FIELDS: dict[str, Checker] = {
    **_CERTIFICATE_COMMON,
    "role": _constant(ROLE_OPERATOR),
}

DEVICE_CERTIFICATE_FIELDS: dict[str, Checker] = {
    **_CERTIFICATE_COMMON,
    "role": _constant(ROLE_DEVICE),
    "wallet": _check_id,
    "wallet_class": _check_wallet_class,
    "offline_balance_fen_max": _check_amount,
    "offline_payment_fen_max": _check_amount,
    "offline_payments_max": _check_counter,
}

LOAD_RECEIPT_FIELDS: dict[str, Checker] = {
    **_common(LOAD_RECEIPT),
    "load_id": _check_id,
    "operator": _check_id,
    "device": _check_id,
    "wallet": _check_id,
    "amount_fen": _check_amount,
    "currency": _constant(CURRENCY),
    "load_counter": _check_counter,
    "created_at": _check_time,
}

OFFLINE_PAYMENT_FIELDS: dict[str, Checker] = {
    **_common(OFFLINE_PAYMENT),
    "payer_device": _check_id,
    "payer_wallet": _check_id,
    "counter": _check_counter,
    "load_counter": _check_counter,
    "payments_since_sync": _check_counter,
    "payee_device": _check_id,
    "payee_wallet": _check_id,
    "amount_fen": _check_amount,
    "currency": _constant(CURRENCY),
    "created_at": _check_time,
    "prev_hash": _check_hex64,
}

UNLOAD_FIELDS: dict[str, Checker] = {
    **_common(UNLOAD),
    "device": _check_id,
    "wallet": _check_id,
    "unload_counter": _check_counter,
    "counter": _check_count0,
    "last_payment_hash": _check_hex64,
    "load_counter": _check_count0,
    "loaded_fen_total": _check_amount0,
    "paid_fen_total": _check_amount0,
    "amount_fen": _check_amount0,
    "currency": _constant(CURRENCY),
    "created_at": _check_time,
}

REVOCATION_LIST_FIELDS: dict[str, Checker] = {
    **_common(REVOCATION_LIST),
    "issuer": _check_id,
    "number": _check_counter,
    "issued_at": _check_time,
    "revoked": _ids,
}

SYNC_RECEIPT_FIELDS: dict[str, Checker] = {
    **_common(SYNC_RECEIPT),
    "sync_id": _check_id,
    "operator": _check_id,
    "device": _check_id,
    "synced_counter": _check_count0,
    "settled": _hashes,
    "created_at": _check_time,
}

_SCHEMAS: dict[str, dict[str, Checker]] = {
    LOAD_RECEIPT: LOAD_RECEIPT_FIELDS,
    OFFLINE_PAYMENT: OFFLINE_PAYMENT_FIELDS,
    UNLOAD: UNLOAD_FIELDS,
    REVOCATION_LIST: REVOCATION_LIST_FIELDS,
    SYNC_RECEIPT: SYNC_RECEIPT_FIELDS,
}


# --- validation ---------------------------------------------------------------------------


def validate(tag: str, message: Any) -> dict[str, Any]:
    """Return a plain copy of ``message`` if it is a well-formed message of ``tag``.

    Checks in a fixed order: it is an object; its ``domain`` is ``tag``; its field set is
    exactly the schema's; then each field in alphabetical order. Cross-field rules (caps,
    validity window) follow the per-field checks.
    """
    if not isinstance(message, Mapping):
        raise InvalidMessage("a message is a JSON object")
    if message.get("domain") != tag:
        raise _fail("domain", f"must be {tag!r}")
    schema = _schema(tag, message)
    missing = sorted(set(schema) - set(message))
    extra = sorted(set(message) - set(schema))
    if missing or extra:
        raise InvalidMessage(f"{tag}: missing fields {missing}, unknown fields {extra}")
    for field in sorted(schema):
        schema[field](field, message[field])
    plain = dict(message)
    _check_cross_fields(tag, plain)
    return plain


def _schema(tag: str, message: Mapping[str, Any]) -> dict[str, Checker]:
    if tag != CERTIFICATE:
        return _SCHEMAS[tag]
    role = message.get("role")
    if role == ROLE_OPERATOR:
        return OPERATOR_CERTIFICATE_FIELDS
    if role == ROLE_DEVICE:
        return DEVICE_CERTIFICATE_FIELDS
    raise _fail("role", f"must be {ROLE_OPERATOR!r} or {ROLE_DEVICE!r}")


def _check_cross_fields(tag: str, message: dict[str, Any]) -> None:
    if tag == CERTIFICATE:
        if parse_time(message["not_after"]) <= parse_time(message["not_before"]):
            raise _fail("not_after", "must be later than not_before")
        if message["role"] == ROLE_DEVICE and (
            message["offline_payment_fen_max"] > message["offline_balance_fen_max"]
        ):
            raise _fail("offline_payment_fen_max", "must not exceed offline_balance_fen_max")
    if tag == UNLOAD and (
        message["paid_fen_total"] + message["amount_fen"] > message["loaded_fen_total"]
    ):
        raise _fail("amount_fen", "paid_fen_total + amount_fen exceeds loaded_fen_total")
    if tag == OFFLINE_PAYMENT and message["payments_since_sync"] > message["counter"]:
        raise _fail("payments_since_sync", "cannot exceed counter")


# --- times --------------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    """The textual form of a time in offline messages: UTC, microseconds, ``Z``."""
    if moment.tzinfo is None:
        raise InvalidMessage("times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any, field: str = "time") -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`` into an aware UTC datetime."""
    if not isinstance(value, str) or not _TIME.match(value):
        raise _fail(field, "must be YYYY-MM-DDTHH:MM:SS[.ffffff]Z")
    try:
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise _fail(field, "is not a calendar time") from exc


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
    if not isinstance(envelope, Mapping) or not {"message", "signature"} <= set(envelope):
        raise InvalidMessage(f"{tag}: an envelope has a message and a signature")
    signature = envelope["signature"]
    if not isinstance(signature, str) or not _HEX128.match(signature):
        raise _fail("signature", "must be 128 lowercase hex characters")
    return validate(tag, envelope["message"]), bytes.fromhex(signature)


def verify_envelope(tag: str, envelope: Any, public_key: bytes) -> dict[str, Any]:
    """Open ``envelope`` and check its signature by ``public_key``; return the message."""
    message, signature = open_envelope(tag, envelope)
    signing.verify(public_key, tag, message, signature)
    return message


def check_envelope_keys(envelope: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(envelope) - allowed)
    if extra:
        raise InvalidMessage(f"unknown envelope fields {extra}")
