"""Reading and locking wallets and keys for the services that change them.

Lock order on PostgreSQL (SQLite already holds its one write lock from ``BEGIN IMMEDIATE``):
wallet rows in ascending ``wallets.id``, then key rows, then -- inside
:func:`cbdc.storage.journal.post_entries` -- the chain head and the accounts. Every service that
moves a wallet's money locks its wallet row first, so the balance and the running limit counters
it reads cannot change under it, and two payments between the same wallets in opposite
directions never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any

from sqlalchemy import Connection, Select, and_, select

from cbdc.domain.errors import NotFound
from cbdc.domain.tiers import Limits, Usage
from cbdc.storage.journal import PostedEntry
from cbdc.storage.tables import accounts, institutions, journal_entries, wallet_keys, wallets

_parents = wallets.alias("parents")


@dataclass(frozen=True, slots=True)
class WalletRow:
    """A wallet as stored, with what payments need next to it: balance, operator float."""

    id: int
    wallet_id: str
    operator_id: int
    operator_code: str
    operator_float_account_id: int
    account_id: int
    balance_fen: int
    holder_kind: str
    merchant_category_code: str | None
    wallet_class: int
    zone: str
    status: str
    parent_id: int | None
    parent_wallet_id: str | None
    caps: Limits
    bank_account_ref: str | None
    reverse_waterfall: bool
    usage: Usage


def _wallet_query() -> Select[Any]:
    float_accounts = accounts.alias("float_accounts")
    return (
        select(
            wallets,
            institutions.c.code.label("operator_code"),
            float_accounts.c.id.label("operator_float_account_id"),
            accounts.c.balance_fen,
            _parents.c.wallet_id.label("parent_wallet_id"),
        )
        .join(accounts, accounts.c.id == wallets.c.account_id)
        .join(institutions, institutions.c.id == wallets.c.operator_id)
        .join(
            float_accounts,
            and_(
                float_accounts.c.institution_id == wallets.c.operator_id,
                float_accounts.c.kind == "float",
            ),
        )
        .outerjoin(_parents, _parents.c.id == wallets.c.parent_id)
    )


def _row(row: Any) -> WalletRow:
    return WalletRow(
        id=row.id,
        wallet_id=row.wallet_id,
        operator_id=row.operator_id,
        operator_code=row.operator_code,
        operator_float_account_id=row.operator_float_account_id,
        account_id=row.account_id,
        balance_fen=row.balance_fen,
        holder_kind=row.holder_kind,
        merchant_category_code=row.merchant_category_code,
        wallet_class=row.wallet_class,
        zone=row.zone,
        status=row.status,
        parent_id=row.parent_id,
        parent_wallet_id=row.parent_wallet_id,
        caps=Limits(
            row.cap_balance_fen,
            row.cap_payment_fen,
            row.cap_daily_outgoing_fen,
            row.cap_annual_outgoing_fen,
        ),
        bank_account_ref=row.bank_account_ref,
        reverse_waterfall=bool(row.reverse_waterfall),
        usage=Usage(_as_date(row.usage_day), row.spent_day_fen, row.usage_year, row.spent_year_fen),
    )


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def load_wallets(
    connection: Connection, wallet_ids: Iterable[str], *, lock: bool = False
) -> dict[str, WalletRow]:
    """The wallets named, by wallet id; with ``lock``, their rows are locked (PostgreSQL) in
    ascending ``wallets.id`` order. Raises NotFound (``wallet_not_found``) for a missing one."""
    wanted = sorted(set(wallet_ids))
    query = _wallet_query().where(wallets.c.wallet_id.in_(wanted)).order_by(wallets.c.id)
    if lock and connection.dialect.name != "sqlite":
        query = query.with_for_update(of=wallets)
    found = {row.wallet_id: _row(row) for row in connection.execute(query)}
    for wallet_id in wanted:
        if wallet_id not in found:
            raise NotFound(f"no wallet {wallet_id!r}", code="wallet_not_found", wallet=wallet_id)
    return found


def load_wallet(connection: Connection, wallet_id: str, *, lock: bool = False) -> WalletRow:
    return load_wallets(connection, [wallet_id], lock=lock)[wallet_id]


def find_wallet(connection: Connection, wallet_id: str) -> WalletRow | None:
    row = connection.execute(_wallet_query().where(wallets.c.wallet_id == wallet_id)).first()
    return None if row is None else _row(row)


def open_sub_wallet_ids(connection: Connection, parent_id: int) -> list[str]:
    return list(
        connection.execute(
            select(wallets.c.wallet_id)
            .where(wallets.c.parent_id == parent_id, wallets.c.status != "closed")
            .order_by(wallets.c.id)
        ).scalars()
    )


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: int
    public_key: str
    wallet_row_id: int
    wallet_id: str
    status: str
    last_sequence: int


def _key_query() -> Select[Any]:
    return select(
        wallet_keys.c.id,
        wallet_keys.c.public_key,
        wallet_keys.c.wallet_id.label("wallet_row_id"),
        wallets.c.wallet_id,
        wallet_keys.c.status,
        wallet_keys.c.last_sequence,
    ).join(wallets, wallets.c.id == wallet_keys.c.wallet_id)


def load_keys(
    connection: Connection, public_keys_hex: Iterable[str], *, lock: bool = False
) -> dict[str, KeyRow]:
    """The enrolled keys among ``public_keys_hex``, by public key (unknown keys are left out);
    with ``lock`` their rows are locked (PostgreSQL) in ascending id order. Callers that also
    lock wallets lock those first."""
    query = (
        _key_query()
        .where(wallet_keys.c.public_key.in_(sorted(set(public_keys_hex))))
        .order_by(wallet_keys.c.id)
    )
    if lock and connection.dialect.name != "sqlite":
        query = query.with_for_update(of=wallet_keys)
    return {
        row.public_key: KeyRow(row.id, row.public_key, row.wallet_row_id, row.wallet_id,
                               row.status, row.last_sequence)
        for row in connection.execute(query)
    }


def load_key(connection: Connection, public_key_hex: str, *, lock: bool = False) -> KeyRow | None:
    return load_keys(connection, [public_key_hex], lock=lock).get(public_key_hex)


def find_entry(connection: Connection, entry_id: str) -> PostedEntry | None:
    """The journal entry posted under ``entry_id``, if any (for repeats of finished commands)."""
    row = connection.execute(
        select(
            journal_entries.c.seq,
            journal_entries.c.entry_id,
            journal_entries.c.kind,
            journal_entries.c.created_at,
            journal_entries.c.entry_hash,
        ).where(journal_entries.c.entry_id == entry_id)
    ).first()
    if row is None:
        return None
    created_at = row.created_at
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return PostedEntry(row.seq, row.entry_id, row.kind, created_at, row.entry_hash, replayed=True)
