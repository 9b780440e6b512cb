"""QR payloads: ``CBDC1:`` + base64url (no padding) of the UTF-8 JCS of an envelope.

Decoding is strict so that one envelope has exactly one QR text: the prefix is case-sensitive,
the base64url alphabet has no padding and no stray bits, and the JSON must already be canonical
(no whitespace, sorted keys, no duplicate keys, integers only). Decoding checks the envelope's
shape only; the receiver then calls ``verify_envelope`` with the domain tag it expects.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, cast

from cbdc.domain.errors import InvalidMessage, InvalidQr
from cbdc.domain.messages import Envelope, check_envelope
from cbdc.domain.signing import canonical
from cbdc.domain.strict_json import JsonRefused, loads_strict

QR_PREFIX = "CBDC1:"
#: The most bytes a QR code can carry (version 40, error correction L, byte mode).
QR_TEXT_LENGTH_MAX = 2953

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)


def encode_qr(envelope: Mapping[str, Any]) -> str:
    """The QR text of a (shape-valid) envelope."""
    check_envelope(envelope)
    payload = canonical(envelope)
    text = QR_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    if len(text) > QR_TEXT_LENGTH_MAX:
        raise InvalidQr(f"envelope needs {len(text)} characters, a QR code holds at most "
                        f"{QR_TEXT_LENGTH_MAX}")
    return text


def decode_qr(text: object) -> Envelope:
    """The envelope in a QR text, shape-checked; InvalidQr if the text is not canonical."""
    if not isinstance(text, str) or not text.startswith(QR_PREFIX):
        raise InvalidQr(f"a QR payload starts with {QR_PREFIX!r}")
    if len(text) > QR_TEXT_LENGTH_MAX:
        raise InvalidQr(f"a QR payload is at most {QR_TEXT_LENGTH_MAX} characters")
    payload = _decode_base64url(text[len(QR_PREFIX):])
    envelope = _parse_canonical_json(payload)
    check_envelope(envelope)
    return cast(Envelope, envelope)


def _decode_base64url(body: str) -> bytes:
    if _BASE64URL.fullmatch(body) is None or len(body) % 4 == 1:
        raise InvalidQr("QR payload is not unpadded base64url")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidQr("QR payload is not unpadded base64url") from exc
    if base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii") != body:
        raise InvalidQr("QR payload has non-zero padding bits")
    return payload


def _parse_canonical_json(payload: bytes) -> object:
    try:
        value = loads_strict(payload, floats=False)
    except JsonRefused as exc:
        raise InvalidQr(f"QR payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidQr("QR payload is not a JSON object")
    try:
        canonical_payload = canonical(value)
    except InvalidMessage as exc:
        raise InvalidQr(f"QR payload is not canonical JSON: {exc.detail}") from exc
    if canonical_payload != payload:
        raise InvalidQr("QR payload is not in canonical (RFC 8785) form")
    return value
