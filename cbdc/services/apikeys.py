"""API keys of institutions (the central bank and each operator) for the HTTP API.

A key is ``cbdc_`` followed by 43 url-safe characters (32 random bytes). It is returned once, by
:func:`create_api_key`; the database keeps only its sha256 and the first characters for display.
The role follows the institution: the central bank's keys are ``central_bank``, an operator's
keys are ``operator``. Verification looks the hash up by its unique index and compares the
stored and computed hashes in constant time; revoked keys fail like unknown ones, with the same
error, so a caller learns nothing about which keys exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update

from cbdc.domain.errors import AuthenticationFailed, NotFound
from cbdc.services.context import LedgerContext
from cbdc.storage.tables import api_keys, institutions

KEY_PREFIX = "cbdc_"
KEY_RANDOM_BYTES = 32
DISPLAY_PREFIX_LENGTH = 12
ROLE_BY_KIND = {"central_bank": "central_bank", "operator": "operator"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified key speaks for."""

    institution_id: int
    institution_code: str
    role: str

    @property
    def is_central_bank(self) -> bool:
        return self.role == "central_bank"


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: int
    prefix: str
    institution_code: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(
    context: LedgerContext,
    institution_code: str,
    *,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[ApiKeyRecord, str]:
    """Create a key for the institution; return its record and the plaintext key (shown once)."""
    secret = base64.urlsafe_b64encode(random_bytes(KEY_RANDOM_BYTES)).rstrip(b"=").decode()
    key = KEY_PREFIX + secret
    with context.write() as connection:
        institution = connection.execute(
            select(institutions.c.id, institutions.c.kind).where(
                institutions.c.code == institution_code
            )
        ).first()
        if institution is None:
            raise NotFound(
                f"no institution {institution_code!r} (the central bank is 'central-bank')",
                code="institution_not_found",
            )
        role = ROLE_BY_KIND[institution.kind]
        now = context.now()
        key_id = connection.execute(
            insert(api_keys)
            .values(
                key_hash=hash_key(key),
                prefix=key[:DISPLAY_PREFIX_LENGTH],
                institution_id=institution.id,
                role=role,
                created_at=now,
            )
            .returning(api_keys.c.id)
        ).scalar_one()
    record = ApiKeyRecord(
        id=key_id, prefix=key[:DISPLAY_PREFIX_LENGTH], institution_code=institution_code,
        role=role, created_at=now, revoked_at=None,
    )
    return record, key


def verify_api_key(context: LedgerContext, key: str) -> Principal:
    """The institution and role a presented key speaks for; AuthenticationFailed otherwise."""
    presented = hash_key(key)
    with context.read() as connection:
        row = connection.execute(
            select(
                api_keys.c.key_hash,
                api_keys.c.role,
                api_keys.c.revoked_at,
                institutions.c.id,
                institutions.c.code,
            )
            .join(institutions, institutions.c.id == api_keys.c.institution_id)
            .where(api_keys.c.key_hash == presented)
        ).first()
    if row is None or row.revoked_at is not None:
        raise AuthenticationFailed("missing, unknown or revoked API key", code="unauthenticated")
    # The lookup already matched; the constant-time compare keeps the check itself free of
    # timing differences should the lookup ever change (e.g. to a prefix index).
    if not hmac.compare_digest(row.key_hash, presented):
        raise AuthenticationFailed("missing, unknown or revoked API key", code="unauthenticated")
    return Principal(institution_id=row.id, institution_code=row.code, role=row.role)


def revoke_api_key(context: LedgerContext, key_or_prefix: str) -> int:
    """Revoke a key, named by the key itself or by its display prefix (as ``cbdc apikey
    create`` and ``list`` print it, ``...`` included or not: every live key with that prefix);
    return how many were revoked."""
    text = key_or_prefix.removesuffix("...")
    if len(text) > DISPLAY_PREFIX_LENGTH:
        matches = api_keys.c.key_hash == hash_key(text)
        named = f"{text[:DISPLAY_PREFIX_LENGTH]}... (the whole key)"
    else:
        matches = api_keys.c.prefix == text
        named = f"with prefix {text!r}"
    with context.write() as connection:
        result = connection.execute(
            update(api_keys).where(matches, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=context.now())
        )
        if result.rowcount == 0:
            revoked = connection.execute(
                select(func.count()).select_from(api_keys).where(matches)
            ).scalar_one()
            state = "is already revoked" if revoked else "is not known"
            raise NotFound(f"the API key {named} {state}", code="api_key_not_found")
        return int(result.rowcount)


def list_api_keys(context: LedgerContext) -> list[ApiKeyRecord]:
    with context.read() as connection:
        rows = connection.execute(
            select(api_keys, institutions.c.code)
            .join(institutions, institutions.c.id == api_keys.c.institution_id)
            .order_by(api_keys.c.id)
        ).all()
    return [
        ApiKeyRecord(
            id=row.id, prefix=row.prefix, institution_code=row.code, role=row.role,
            created_at=row.created_at, revoked_at=row.revoked_at,
        )
        for row in rows
    ]
