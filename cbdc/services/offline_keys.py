"""The ledger's offline PKI: the central bank's root key and each operator's key.

Both are derived deterministically from ``context.offline_root_seed`` (a documented, public test
default; production holds these keys in HSMs, see docs/operations.md):

* root key: ``SigningKey(sha256("cbdc offline root" || 0x00 || seed))``;
* operator key: ``SigningKey(sha256("cbdc offline operator" || 0x00 || seed || 0x00 || code))``.

An operator's certificate is deterministic as well: serial ``op:<code>``, valid for
:data:`OPERATOR_CERTIFICATE_VALIDITY` from the moment the operator was registered, so every
process of the ledger signs the same bytes and devices see one operator certificate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import nacl.signing

from cbdc.offline import DeviceCertificate, OperatorAuthority, RootAuthority
from cbdc.services.context import CENTRAL_BANK_CODE, LedgerContext
from cbdc.storage.journal import as_utc

ROOT_AUTHORITY_ID = CENTRAL_BANK_CODE
OPERATOR_CERTIFICATE_VALIDITY = timedelta(days=20 * 365)


@lru_cache(maxsize=64)
def _root_key(seed: bytes) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"cbdc offline root\x00" + seed).digest())


@lru_cache(maxsize=1024)
def _operator_key(seed: bytes, operator_code: str) -> nacl.signing.SigningKey:
    material = b"cbdc offline operator\x00" + seed + b"\x00" + operator_code.encode("ascii")
    return nacl.signing.SigningKey(hashlib.sha256(material).digest())


def root_authority(context: LedgerContext) -> RootAuthority:
    return RootAuthority(context.ledger_id, ROOT_AUTHORITY_ID, _root_key(context.offline_root_seed))


def root_public_key(context: LedgerContext) -> bytes:
    """What every device pins, and what the ledger verifies chains against."""
    return bytes(_root_key(context.offline_root_seed).verify_key)


def operator_authority(
    context: LedgerContext, operator_code: str, registered_at: datetime
) -> OperatorAuthority:
    """The operator's signing authority, with its root-signed certificate."""
    return _operator_authority(
        context.offline_root_seed, context.ledger_id, operator_code, as_utc(registered_at)
    )


@lru_cache(maxsize=1024)
def _operator_authority(
    seed: bytes, ledger_id: str, operator_code: str, registered_at: datetime
) -> OperatorAuthority:
    key = _operator_key(seed, operator_code)
    root = RootAuthority(ledger_id, ROOT_AUTHORITY_ID, _root_key(seed))
    certificate = root.certify_operator(
        serial=f"op:{operator_code}",
        operator_id=operator_code,
        operator_public_key=bytes(key.verify_key),
        not_before=registered_at,
        not_after=registered_at + OPERATOR_CERTIFICATE_VALIDITY,
    )
    return OperatorAuthority(key, certificate)


@lru_cache(maxsize=65_536)
def issued_certificate(certificate_json: str) -> tuple[Mapping[str, Any], DeviceCertificate]:
    """A device certificate as the ledger stored it (its envelope, and parsed): the stored text
    never changes, so each device's is parsed once per process. Callers only read both."""
    envelope = json.loads(certificate_json)
    return envelope, DeviceCertificate.from_envelope(envelope)
