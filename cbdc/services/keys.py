"""Wallet keys: enrolling Ed25519 public keys and revoking them.

A wallet signs with one or more enrolled keys (a phone, a card, a till). Keys that are not
canonical encodings of a point of prime order (including the small-order points, with which a
forged signature could verify for many messages) are refused at enrolment. Revocation is
final and immediate: the payment service checks the key's status in the same transaction that
settles, so nothing signed by a revoked key settles after the revocation commits. Each key keeps
the last sequence number it used; a payment must carry a larger one (see
:mod:`cbdc.services.payments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from cbdc.domain.errors import NotFound
from cbdc.domain.signing import public_key_from_hex
from cbdc.services.context import LedgerContext
from cbdc.services.wallets import key_enrolment_needed
from cbdc.storage.journal import as_utc
from cbdc.storage.tables import wallet_keys, wallets
from cbdc.storage.wallets import insert_keys, load_key, load_wallet


@dataclass(frozen=True, slots=True)
class WalletKey:
    public_key: str
    wallet_id: str
    status: str
    last_sequence: int
    enrolled_at: datetime
    revoked_at: datetime | None


def decode_public_key(public_key_hex: object) -> bytes:
    """64 lowercase hex characters of a valid Ed25519 public key, as bytes."""
    return public_key_from_hex(public_key_hex)


def enrol_key(context: LedgerContext, wallet_id: str, public_key_hex: str) -> WalletKey:
    """Enrol ``public_key_hex`` for ``wallet_id``. Idempotent for the same wallet; a key enrolled
    for another wallet is ``public_key_exists``; a revoked key is never enrolled again."""
    decode_public_key(public_key_hex)
    with context.write() as connection:
        wallet = load_wallet(connection, wallet_id, lock=True)
        existing = load_key(connection, public_key_hex)
        enrolled = None if existing is None else (existing.wallet_id, existing.status)
        if key_enrolment_needed(enrolled, wallet, wallet_id):
            insert_keys(connection, [(public_key_hex, wallet.id)], now=context.now())
        return _get(connection, public_key_hex)


def revoke_key(context: LedgerContext, public_key_hex: str) -> WalletKey:
    """Revoke a key for good. Idempotent (revoking a revoked key returns it unchanged)."""
    decode_public_key(public_key_hex)
    with context.write() as connection:
        key = load_key(connection, public_key_hex, lock=True)
        if key is None:
            raise NotFound("no such public key", code="public_key_not_found")
        if key.status == "active":
            connection.execute(
                update(wallet_keys)
                .where(wallet_keys.c.id == key.id)
                .values(status="revoked", revoked_at=context.now())
            )
        return _get(connection, public_key_hex)


def get_key(context: LedgerContext, public_key_hex: str) -> WalletKey:
    with context.read() as connection:
        return _get(connection, public_key_hex)


def list_keys(context: LedgerContext, wallet_id: str) -> list[WalletKey]:
    with context.read() as connection:
        wallet = load_wallet(connection, wallet_id)
        hexes = connection.execute(
            select(wallet_keys.c.public_key)
            .where(wallet_keys.c.wallet_id == wallet.id)
            .order_by(wallet_keys.c.id)
        ).scalars().all()
        return [_get(connection, public_key) for public_key in hexes]


def _get(connection: Connection, public_key_hex: str) -> WalletKey:
    row = connection.execute(
        select(wallet_keys, wallets.c.wallet_id.label("wallet_code"))
        .join(wallets, wallets.c.id == wallet_keys.c.wallet_id)
        .where(wallet_keys.c.public_key == public_key_hex)
    ).first()
    if row is None:
        raise NotFound("no such public key", code="public_key_not_found")
    return WalletKey(
        public_key=row.public_key,
        wallet_id=row.wallet_code,
        status=row.status,
        last_sequence=row.last_sequence,
        enrolled_at=as_utc(row.enrolled_at),
        revoked_at=None if row.revoked_at is None else as_utc(row.revoked_at),
    )
