"""Canonical signed messages: RFC 8785 (JCS) JSON, domain tags, Ed25519 (PyNaCl).

The bytes a party signs are ``domain_tag (ASCII) || 0x00 || JCS(message)``, and ``message``
carries the same tag in its ``domain`` field, so a signature made for one kind of message can
never be replayed as another. docs/protocol.md is the normative description.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import nacl.bindings
import nacl.exceptions
import nacl.signing
import rfc8785

from cbdc.domain.errors import DomainMismatch, InvalidKey, InvalidMessage, InvalidSignature

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
DOMAIN_PREFIX = "cbdc/v1/"
#: Keys whose validity is remembered (about 300 bytes each).
PUBLIC_KEY_CACHE_SIZE = 32_768

_LOWER_HEX = re.compile(r"[0-9a-f]*", re.ASCII)


#: JSON's safe integer range: RFC 8785 serialises numbers as IEEE 754 doubles.
_SAFE_INTEGER = 2**53 - 1


def canonical(message: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON. Floats are refused: every number in a signed message is an int."""
    fast = _fast_canonical(message)  # a plain message holds no floats
    if fast is not None:
        return fast
    _refuse_floats(message)
    try:
        return bytes(rfc8785.dumps(dict(message)))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidMessage(f"message is not canonical JSON: {exc}") from exc


def _fast_canonical(message: Mapping[str, Any]) -> bytes | None:
    r"""The same bytes as RFC 8785 for the only shapes signed messages have (objects with ASCII
    keys, strings, safe integers, booleans, null), from the C JSON encoder; None for anything
    else, which then goes through the full RFC 8785 implementation.

    For these shapes the two agree: keys sort identically when ASCII (JCS sorts by UTF-16 code
    units), integers print the same, and ``json.dumps(ensure_ascii=False)`` escapes exactly
    what JCS escapes (quote, backslash, control characters as ``\b \f \n \r \t`` or lowercase
    ``\\u00xx``). A property test compares the two on random messages."""
    if not _plain(message):
        return None
    text = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: let RFC 8785 refuse it with its reason
        return None


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(-_SAFE_INTEGER <= value <= _SAFE_INTEGER)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii() or not _plain(item):
                return False
        return True
    return False


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise InvalidMessage("signed messages carry no floats")
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


def signed_bytes(domain: str, message: Mapping[str, Any]) -> bytes:
    """Exactly the bytes that are signed for ``message`` under ``domain``."""
    if not domain.startswith(DOMAIN_PREFIX) or not domain.isascii():
        raise DomainMismatch(f"unknown domain tag {domain!r}")
    if message.get("domain") != domain:
        raise DomainMismatch(f"message domain {message.get('domain')!r} does not match {domain!r}")
    return domain.encode("ascii") + b"\x00" + canonical(message)


def check_public_key(public_key: bytes) -> bytes:
    """Refuse keys that are not 32 bytes, not canonical encodings, or of small order."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidKey("an Ed25519 public key is 32 bytes")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(public_key):
        raise InvalidKey("public key is not a canonical point of prime order")
    return public_key


def is_lower_hex(text: object, length: int) -> TypeGuard[str]:
    """True if ``text`` is a string of exactly ``length`` lowercase hex digits (ASCII only)."""
    return isinstance(text, str) and len(text) == length and _LOWER_HEX.fullmatch(text) is not None


def public_key_from_hex(text: object) -> bytes:
    """Decode a public key as it travels (64 lowercase hex) and refuse weak or malformed keys."""
    if not is_lower_hex(text, 2 * PUBLIC_KEY_BYTES):
        raise InvalidKey("a public key travels as 64 lowercase hex digits")
    return _valid_public_key(text)


@functools.lru_cache(maxsize=PUBLIC_KEY_CACHE_SIZE)
def _valid_public_key(text: str) -> bytes:
    # The subgroup check costs about as much as a signature verification (a scalar
    # multiplication); the same payer and merchant keys come back again and again, so the
    # verdict is cached. Refusals raise and are therefore never cached.
    return check_public_key(bytes.fromhex(text))


def sign(signing_key: nacl.signing.SigningKey, domain: str, message: Mapping[str, Any]) -> bytes:
    return bytes(signing_key.sign(signed_bytes(domain, message)).signature)


def verify(public_key: bytes, domain: str, message: Mapping[str, Any], signature: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` is ``public_key``'s over ``message``."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature("an Ed25519 signature is 64 bytes")
    if not verify_raw(public_key, signed_bytes(domain, message), signature):
        raise InvalidSignature("signature does not verify")


def verify_raw(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Plain Ed25519 verification of bytes: the one place the ledger asks libsodium."""
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_many(triples: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """Whether each ``(public key, signed bytes, signature)`` verifies, in order."""
    return [verify_raw(public_key, data, signature) for public_key, data, signature in triples]


def sign_many(jobs: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """The Ed25519 signature of each ``(secret key, bytes)`` job, in order. The secret key is
    libsodium's 64 bytes, the 32-byte seed followed by its public key (``seed + public_key`` of a
    :class:`~cbdc.domain.keys.KeyPair`); the signature is the one that key pair's
    ``sign_bytes`` makes."""
    return [nacl.bindings.crypto_sign(data, secret)[:SIGNATURE_BYTES] for secret, data in jobs]
