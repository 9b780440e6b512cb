"""The signed messages of protocol v1: their exact fields, and how an envelope is checked.

Every message a wallet or the ledger signs is a flat JSON object whose field set, types and formats
are fixed here, one :class:`MessageKind` per domain tag (docs/protocol.md is the normative text and
docs/vectors/ holds worked examples). This module is pure: it parses, checks and verifies; it never
reads a clock and never looks anything up. Whether a public key is enrolled, a sequence fresh or a
request unexpired is for the services to decide.

Validation order (the same bad message always gets the same code; the first failure wins):

1. shape: the envelope is an object with exactly ``message`` and ``signature``
   (``envelope_invalid``); the signature is 128 lowercase hex digits (``envelope_invalid``);
   the message is an object (``message_invalid``).
2. version: ``version`` is present (``field_missing``), an integer (``field_invalid``) equal to 1
   (``version_unsupported``). It comes before the field set because the field set depends on it.
3. domain: ``domain`` is present (``field_missing``), a string (``field_invalid``) equal to the
   domain tag the receiver expects (``domain_invalid``). It comes before the field set because the
   field set depends on it: a refund sent where a payment is expected is told ``domain_invalid``,
   not that it lacks a ``payee``.
4. fields: the first missing required field in ascending name order (``field_missing``), then the
   first unknown field in ascending name order (``field_unknown``), then each field's value in
   ascending name order, type before format (``field_invalid``, ``amount_invalid``,
   ``currency_unsupported``, ``public_key_invalid``), then cross-field rules in the order listed
   on the kind (``field_invalid``: an ``expires_at`` not after ``created_at``).
5. signature: Ed25519 over ``domain || 0x00 || JCS(message)`` with the message's ``public_key``
   (or the ledger's key, for receipts) (``signature_invalid``).

Every error carries ``extra["field"]`` naming the offending field when there is one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import nacl.signing

from cbdc.domain import signing
from cbdc.domain.errors import (
    DomainMismatch,
    FieldInvalid,
    FieldMissing,
    FieldUnknown,
    InvalidAmount,
    InvalidEnvelope,
    InvalidKey,
    InvalidMessage,
    InvalidSignature,
    UnsupportedCurrency,
    UnsupportedVersion,
)
from cbdc.domain.money import AMOUNT_FEN_MAX, check_amount

PROTOCOL_VERSION = 1
CURRENCY = "CNY"

PAYMENT = "cbdc/v1/payment"
PAYMENT_REQUEST = "cbdc/v1/payment-request"
PAYMENT_CODE = "cbdc/v1/payment-code"
CAPTURE = "cbdc/v1/capture"
REFUND = "cbdc/v1/refund"
RECEIPT = "cbdc/v1/receipt"

RECEIPT_KINDS = ("payment", "capture", "refund")
ID_LENGTH_MAX = 64
MEMO_LENGTH_MAX = 140
REFERENCE_LENGTH_MAX = 64
#: Sequences and entry numbers are JSON integers, so they share the safe-integer ceiling of amounts.
COUNTER_MAX = AMOUNT_FEN_MAX

Message = dict[str, Any]


class Envelope(TypedDict):
    """A signed message as it travels: the message and 128 lowercase hex digits of signature."""

    message: Message
    signature: str


_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_TIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,6}))?Z",
    re.ASCII,
)
#: Characters refused in free text: C0 and C1 controls, lone surrogates, and the bidirectional
#: overrides and isolates, which can make a memo display differently from what was signed.
_TEXT_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")

FieldCheck = Callable[[str, object], None]


# --- times ---------------------------------------------------------------------------------------


def parse_time(text: object, *, field_name: str = "time") -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`` into an aware UTC datetime; else FieldInvalid.
    Valid texts are remembered (settlement reads each payment's time several times)."""
    if isinstance(text, str):
        parsed = _parsed_times.get(text)
        if parsed is not None:
            return parsed
    parsed = _parse_time(text, field_name)
    if len(_parsed_times) >= _PARSED_TIMES_MAX:
        _parsed_times.clear()
    assert isinstance(text, str)  # _parse_time parses nothing else
    _parsed_times[text] = parsed
    return parsed


_PARSED_TIMES_MAX = 65_536
_parsed_times: dict[str, datetime] = {}


def _parse_time(text: object, field_name: str) -> datetime:
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise FieldInvalid(
            f"{field_name} must be a UTC time YYYY-MM-DDTHH:MM:SS[.ffffff]Z, got {text!r}",
            field=field_name,
        )
    parts = {name: int(value) for name, value in match.groupdict(default="0").items()}
    microsecond = int((match.group("fraction") or "").ljust(6, "0"))
    try:
        return datetime(
            parts["year"], parts["month"], parts["day"],
            parts["hour"], parts["minute"], parts["second"], microsecond, tzinfo=UTC,
        )
    except ValueError as exc:
        raise FieldInvalid(f"{field_name} is not a real time: {text!r}", field=field_name) from exc


def format_time(moment: datetime) -> str:
    """The one form we write: whole seconds as ``...SSZ``, otherwise six fractional digits."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise FieldInvalid("times must be timezone-aware datetimes", field="time")
    utc = moment.astimezone(UTC)
    # Not strftime: its %Y does not zero-pad years below 1000 on every platform.
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    return f"{text}.{utc.microsecond:06d}Z" if utc.microsecond else f"{text}Z"


# --- field checks (each raises the error of the first rule the value breaks) ---------------------


def check_int(name: str, value: object, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldInvalid(f"{name} must be an integer, got {type(value).__name__}", field=name)
    if not minimum <= value <= maximum:
        raise FieldInvalid(f"{name} must be in [{minimum}, {maximum}], got {value}", field=name)
    return value


def check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise FieldInvalid(f"{name} must be a string, got {type(value).__name__}", field=name)
    return value


def check_id(name: str, value: object) -> None:
    if _ID.fullmatch(check_str(name, value)) is None:
        raise FieldInvalid(
            f"{name} must be 1-{ID_LENGTH_MAX} characters of A-Z a-z 0-9 . _ : -", field=name
        )


def check_text(name: str, value: object, *, length_max: int) -> None:
    """Free text: 1 to ``length_max`` Unicode code points, no controls, surrogates or bidi marks."""
    text = check_str(name, value)
    if not 1 <= len(text) <= length_max:
        raise FieldInvalid(f"{name} must be 1-{length_max} characters", field=name)
    forbidden = forbidden_character(text)
    if forbidden is not None:
        raise FieldInvalid(f"{name} contains forbidden character {forbidden}", field=name)


def forbidden_character(text: str) -> str | None:
    """The first character free text may not hold, as ``U+XXXX``; None if there is none."""
    found = _TEXT_FORBIDDEN.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def check_time(name: str, value: object) -> None:
    parse_time(check_str(name, value), field_name=name)


def check_amount_field(name: str, value: object) -> None:
    try:
        check_amount(value)
    except InvalidAmount as exc:
        raise InvalidAmount(f"{name}: {exc.detail}", field=name) from exc


def check_currency(name: str, value: object) -> None:
    if check_str(name, value) != CURRENCY:
        raise UnsupportedCurrency(f"{name} must be {CURRENCY!r}, got {value!r}", field=name)


def check_public_key_field(name: str, value: object) -> None:
    try:
        signing.public_key_from_hex(value)
    except InvalidKey as exc:
        raise InvalidKey(f"{name}: {exc.detail}", field=name) from exc


def check_hash(name: str, value: object) -> None:
    if not signing.is_lower_hex(check_str(name, value), 64):
        raise FieldInvalid(f"{name} must be 64 lowercase hex digits", field=name)


def check_counter(name: str, value: object) -> None:
    check_int(name, value, minimum=1, maximum=COUNTER_MAX)


def check_receipt_kind(name: str, value: object) -> None:
    if check_str(name, value) not in RECEIPT_KINDS:
        raise FieldInvalid(f"{name} must be one of {', '.join(RECEIPT_KINDS)}", field=name)


def _memo(name: str, value: object) -> None:
    check_text(name, value, length_max=MEMO_LENGTH_MAX)


def _reference(name: str, value: object) -> None:
    check_text(name, value, length_max=REFERENCE_LENGTH_MAX)


def _header(name: str, value: object) -> None:
    """``version`` and ``domain`` are checked before the field set (steps 2 and 3)."""


def expires_after_created(message: Mapping[str, Any]) -> None:
    if parse_time(message["expires_at"]) <= parse_time(message["created_at"]):
        raise FieldInvalid("expires_at must be after created_at", field="expires_at")


# --- kinds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageKind:
    """One kind of signed message: its domain tag, its fields and who signs it.

    ``signer_field`` names the field holding the signer's public key; ``None`` means the verifier
    supplies the key (receipts are signed by the ledger, whose key the wallet already knows).
    """

    domain: str
    required: Mapping[str, FieldCheck]
    optional: Mapping[str, FieldCheck] = field(default_factory=dict)
    cross_checks: tuple[Callable[[Mapping[str, Any]], None], ...] = ()
    signer_field: str | None = "public_key"
    # Worked out once from the fields above (every message of the kind is checked with them).
    required_in_order: tuple[str, ...] = field(init=False, repr=False, compare=False)
    allowed: frozenset[str] = field(init=False, repr=False, compare=False)
    checks: Mapping[str, FieldCheck] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "required_in_order", tuple(sorted(self.required)))
        object.__setattr__(self, "allowed", frozenset(self.required) | frozenset(self.optional))
        object.__setattr__(self, "checks", {**self.optional, **self.required})


_HEADER: dict[str, FieldCheck] = {"version": _header, "domain": _header, "ledger_id": check_id}
_MONEY: dict[str, FieldCheck] = {"amount_fen": check_amount_field, "currency": check_currency}
_SIGNED_AT: dict[str, FieldCheck] = {"public_key": check_public_key_field, "created_at": check_time}

KINDS: Mapping[str, MessageKind] = {
    kind.domain: kind
    for kind in (
        MessageKind(
            PAYMENT,
            required={
                **_HEADER, **_MONEY, **_SIGNED_AT,
                "payment_id": check_id, "payer": check_id, "payee": check_id,
                "sequence": check_counter,
            },
            optional={"request_id": check_id, "memo": _memo},
        ),
        MessageKind(
            PAYMENT_REQUEST,
            required={
                **_HEADER, **_MONEY, **_SIGNED_AT,
                "request_id": check_id, "merchant": check_id, "reference": _reference,
                "expires_at": check_time,
            },
            cross_checks=(expires_after_created,),
        ),
        MessageKind(
            PAYMENT_CODE,
            required={
                **_HEADER, **_SIGNED_AT,
                "code_id": check_id, "payer": check_id, "max_amount_fen": check_amount_field,
                "currency": check_currency, "expires_at": check_time,
            },
            optional={"merchant": check_id},
            cross_checks=(expires_after_created,),
        ),
        MessageKind(
            CAPTURE,
            required={
                **_HEADER, **_MONEY, **_SIGNED_AT,
                "capture_id": check_id, "code_id": check_id, "merchant": check_id,
            },
        ),
        MessageKind(
            REFUND,
            required={
                **_HEADER, **_MONEY, **_SIGNED_AT,
                "refund_id": check_id, "payment_id": check_id, "merchant": check_id,
            },
        ),
        MessageKind(
            RECEIPT,
            required={
                **_HEADER, **_MONEY,
                "receipt_for": check_id, "kind": check_receipt_kind,
                "payer": check_id, "payee": check_id,
                "entry_seq": check_counter, "entry_hash": check_hash, "settled_at": check_time,
            },
            signer_field=None,
        ),
    )
}


def kind_for(domain: str) -> MessageKind:
    """The kind registered for ``domain``; a programming error (KeyError) if there is none."""
    return KINDS[domain]


# --- validation ----------------------------------------------------------------------------------


def unchecked_message(envelope: object) -> Mapping[str, Any]:
    """An envelope's message as sent, before any check: ``{}`` unless the envelope is a mapping
    whose ``message`` is one. For best-effort reads only (what a refusal names, where a batch
    may be cut), never for a decision about money."""
    message = envelope.get("message") if isinstance(envelope, Mapping) else None
    return message if isinstance(message, Mapping) else {}


def check_envelope(envelope: object) -> tuple[Message, bytes]:
    """Step 1 (shape): return the message object and the raw signature bytes."""
    if not isinstance(envelope, Mapping):
        raise InvalidEnvelope("an envelope is a JSON object")
    keys = set(envelope)
    if keys != {"message", "signature"}:
        extra = sorted(str(key) for key in keys - {"message", "signature"})
        missing = sorted({"message", "signature"} - keys)
        raise InvalidEnvelope(
            f"an envelope has exactly 'message' and 'signature' (missing {missing}, extra {extra})"
        )
    signature = envelope["signature"]
    if not signing.is_lower_hex(signature, 2 * signing.SIGNATURE_BYTES):
        raise InvalidEnvelope("signature must be 128 lowercase hex digits", field="signature")
    message = _check_message_object(envelope["message"])
    return message, bytes.fromhex(signature)


def _check_message_object(message: object) -> Message:
    if not isinstance(message, Mapping):
        raise InvalidMessage("a signed message is a JSON object")
    if not all(isinstance(key, str) for key in message):
        raise InvalidMessage("message keys must be strings")
    return dict(message)


def validate_message(message: object, expected_domain: str | MessageKind) -> Message:
    """Steps 2-4 (version, domain, fields) for an unsigned message; returns a copy of it."""
    kind = expected_domain if isinstance(expected_domain, MessageKind) else KINDS[expected_domain]
    checked = _check_message_object(message)
    _check_version(checked)
    _check_domain(checked, kind.domain)
    _check_fields(checked, kind)
    return checked


def _check_version(message: Message) -> None:
    if "version" not in message:
        raise FieldMissing("version is required", field="version")
    version = message["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise FieldInvalid("version must be an integer", field="version")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"version {version} is not supported (this is version {PROTOCOL_VERSION})",
            field="version",
        )


def _check_domain(message: Message, expected: str) -> None:
    if "domain" not in message:
        raise FieldMissing("domain is required", field="domain")
    domain = check_str("domain", message["domain"])
    if domain != expected:
        raise DomainMismatch(f"expected a {expected!r} message, got {domain!r}", field="domain")


def _check_fields(message: Message, kind: MessageKind) -> None:
    for name in kind.required_in_order:
        if name not in message:
            raise FieldMissing(f"{name} is required in a {kind.domain} message", field=name)
    names = sorted(message)
    allowed = kind.allowed
    for name in names:
        if name not in allowed:
            raise FieldUnknown(f"{name} is not a field of a {kind.domain} message", field=name)
    checks = kind.checks
    for name in names:
        checks[name](name, message[name])
    for cross_check in kind.cross_checks:
        cross_check(message)


def verify_envelope(
    envelope: object, expected_domain: str | MessageKind, *, public_key_hex: str | None = None
) -> Message:
    """Check an envelope completely (steps 1-5) and return its message.

    The signature is verified with ``public_key_hex`` if given, else with the key the message
    names in its ``public_key`` field. Whether that key belongs to the payer is the caller's
    business (the services check enrolment); this only proves the key signed these bytes.
    """
    prepared = prepare_envelope(envelope, expected_domain, public_key_hex=public_key_hex)
    if not prepared.signature_valid():
        raise InvalidSignature("signature does not verify")
    return prepared.message


@dataclass(frozen=True, slots=True)
class PreparedEnvelope:
    """An envelope checked in every way but the signature (steps 1-4), with exactly what the
    Ed25519 check needs, so a batch can run those checks on another core."""

    message: Message
    public_key: bytes
    signed_bytes: bytes
    signature: bytes

    def signature_valid(self) -> bool:
        return signing.verify_raw(self.public_key, self.signed_bytes, self.signature)

    def message_jcs(self) -> bytes:
        """The message's canonical JSON (RFC 8785): the signed bytes after the domain tag and
        its NUL separator."""
        return self.signed_bytes.partition(b"\x00")[2]


def prepare_envelope(
    envelope: object, expected_domain: str | MessageKind, *, public_key_hex: str | None = None
) -> PreparedEnvelope:
    """Steps 1-4 of :func:`verify_envelope`; the caller verifies the signature (step 5)."""
    kind = expected_domain if isinstance(expected_domain, MessageKind) else KINDS[expected_domain]
    message, signature = check_envelope(envelope)
    validate_message(message, kind)
    if public_key_hex is not None:
        public_key = signing.public_key_from_hex(public_key_hex)
    elif kind.signer_field is not None:
        public_key = bytes.fromhex(message[kind.signer_field])
    else:
        raise TypeError(f"verifying a {kind.domain} message needs public_key_hex")
    if len(signature) != signing.SIGNATURE_BYTES:
        raise InvalidSignature("an Ed25519 signature is 64 bytes")
    return PreparedEnvelope(message, public_key, signing.signed_bytes(kind.domain, message),
                            signature)


def seal(signing_key: nacl.signing.SigningKey, message: Mapping[str, Any]) -> Envelope:
    """Validate ``message`` for its own domain tag, sign it and wrap it in an envelope.

    A message naming a signer (``public_key``) must name ``signing_key``'s own key, so a wallet
    cannot produce an envelope that no verifier would accept.
    """
    checked, data = sealable(message, bytes(signing_key.verify_key).hex())
    return {"message": checked, "signature": signing_key.sign(data).signature.hex()}


def sealable(message: Mapping[str, Any], public_key_hex: str) -> tuple[Message, bytes]:
    """What :func:`seal` signs with the key ``public_key_hex``: ``message`` validated for its
    own domain tag (naming that key, if its kind names a signer), and the exact bytes to sign."""
    domain = message.get("domain")
    if not isinstance(domain, str) or domain not in KINDS:
        raise DomainMismatch(f"no message kind has domain tag {domain!r}", field="domain")
    kind = KINDS[domain]
    checked = validate_message(message, kind)
    if kind.signer_field is not None and checked[kind.signer_field] != public_key_hex:
        raise InvalidKey("message names another key than its signer", field="public_key")
    return checked, signing.signed_bytes(domain, checked)
