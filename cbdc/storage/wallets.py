"""Reading and locking wallets and keys for the services that change them.

Lock order on PostgreSQL (SQLite already holds its one write lock from ``BEGIN IMMEDIATE``):
wallet rows in ascending ``wallets.id``, then key rows, then -- inside
:func:`cbdc.storage.journal.post_entries` -- the chain head and the accounts. Every service that
moves a wallet's money locks its wallet row first, so the balance and the running limit counters
it reads cannot change under it, and two payments between the same wallets in opposite
directions never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from cbdc.domain.errors import NotFound
from cbdc.domain.tiers import Limits, Usage
from cbdc.storage.journal import PostedEntry
from cbdc.storage.tables import accounts, journal_entries, wallet_identities, wallet_keys, wallets

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


# The hot path's reads, written once and sent straight to the driver (as the journal does):
# building and compiling Core constructs costs more per call than the database spends on them.
_WALLET_SELECT = (
    "SELECT w.id, w.wallet_id, w.operator_id, i.code AS operator_code,"
    " f.id AS operator_float_account_id, w.account_id, a.balance_fen, w.holder_kind,"
    " w.merchant_category_code, w.wallet_class, w.zone, w.status, w.parent_id,"
    " p.wallet_id AS parent_wallet_id, w.cap_balance_fen, w.cap_payment_fen,"
    " w.cap_daily_outgoing_fen, w.cap_annual_outgoing_fen, w.bank_account_ref,"
    " w.reverse_waterfall, w.usage_day, w.spent_day_fen, w.usage_year, w.spent_year_fen"
    " FROM wallets w"
    " JOIN accounts a ON a.id = w.account_id"
    " JOIN institutions i ON i.id = w.operator_id"
    " JOIN accounts f ON f.institution_id = w.operator_id AND f.kind = 'float'"
    " LEFT JOIN wallets p ON p.id = w.parent_id"
)
_KEY_SELECT = (
    "SELECT k.id, k.public_key, k.wallet_id AS wallet_row_id, w.wallet_id, k.status,"
    " k.last_sequence FROM wallet_keys k JOIN wallets w ON w.id = k.wallet_id"
)


def driver_sql(connection: Connection, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, in the driver's own style (psycopg: ``%s``)."""
    return sql if connection.dialect.name == "sqlite" else sql.replace("?", "%s")


def _select_in(
    connection: Connection, base: str, alias: str, column: str, values: list[Any], lock: bool
) -> Any:
    """Rows of ``base`` whose ``alias.column`` is in ``values``, in ascending ``alias.id`` order;
    with ``lock``, ``alias``'s rows are locked in that order (PostgreSQL)."""
    marks = ", ".join("?" for _ in values)
    sql = f"{base} WHERE {alias}.{column} IN ({marks}) ORDER BY {alias}.id"
    if lock and connection.dialect.name != "sqlite":
        sql += f" FOR UPDATE OF {alias}"
    return connection.exec_driver_sql(driver_sql(connection, sql), tuple(values))


def _row(row: Any) -> WalletRow:
    """A row of ``_WALLET_SELECT``, unpacked by position (by name costs more than the query)."""
    (row_id, wallet_id, operator_id, operator_code, float_account_id, account_id, balance_fen,
     holder_kind, category_code, wallet_class, zone, status, parent_id, parent_wallet_id,
     cap_balance_fen, cap_payment_fen, cap_daily_fen, cap_annual_fen, bank_account_ref,
     reverse_waterfall, usage_day, spent_day_fen, usage_year, spent_year_fen) = row
    return WalletRow(
        row_id, wallet_id, operator_id, operator_code, float_account_id, account_id,
        balance_fen, holder_kind, category_code, wallet_class, zone, status, parent_id,
        parent_wallet_id, Limits(cap_balance_fen, cap_payment_fen, cap_daily_fen, cap_annual_fen),
        bank_account_ref, bool(reverse_waterfall),
        Usage(_as_date(usage_day), spent_day_fen, usage_year, spent_year_fen),
    )


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def load_wallets(
    connection: Connection,
    wallet_ids: Iterable[str],
    *,
    lock: bool = False,
    require_all: bool = True,
) -> dict[str, WalletRow]:
    """The wallets named, by wallet id; with ``lock``, their rows are locked (PostgreSQL) in
    ascending ``wallets.id`` order. Raises NotFound (``wallet_not_found``) for a missing one,
    unless ``require_all`` is false (batches answer each item on its own)."""
    wanted = sorted(set(wallet_ids))
    if not wanted:
        return {}
    rows = _select_in(connection, _WALLET_SELECT, "w", "wallet_id", wanted, lock)
    found = {wallet.wallet_id: wallet for wallet in map(_row, rows)}
    for wallet_id in wanted if require_all else ():
        if wallet_id not in found:
            raise wallet_not_found(wallet_id)
    return found


def wallet_not_found(wallet_id: str) -> NotFound:
    return NotFound(f"no wallet {wallet_id!r}", code="wallet_not_found", wallet=wallet_id)


def load_wallet(connection: Connection, wallet_id: str, *, lock: bool = False) -> WalletRow:
    return load_wallets(connection, [wallet_id], lock=lock)[wallet_id]


def find_wallet(connection: Connection, wallet_id: str) -> WalletRow | None:
    row = _select_in(connection, _WALLET_SELECT, "w", "wallet_id", [wallet_id], False).first()
    return None if row is None else _row(row)


def open_sub_wallet_ids(connection: Connection, parent_id: int) -> list[str]:
    return list(
        connection.execute(
            select(wallets.c.wallet_id)
            .where(wallets.c.parent_id == parent_id, wallets.c.status != "closed")
            .order_by(wallets.c.id)
        ).scalars()
    )


def load_identities(
    connection: Connection, wallet_row_ids: Iterable[int]
) -> dict[int, tuple[bytes, str]]:
    """The salt and phone hash the operator holds for each wallet (by ``wallets.id``) that has
    identity evidence on record (sub-wallets have none)."""
    wanted = sorted(set(wallet_row_ids))
    if not wanted:
        return {}
    rows = connection.execute(
        select(wallet_identities.c.wallet_id, wallet_identities.c.salt,
               wallet_identities.c.phone_hash)
        .where(wallet_identities.c.wallet_id.in_(wanted))
    )
    return {row.wallet_id: (bytes.fromhex(row.salt), row.phone_hash) for row in rows}


def insert_wallets(
    connection: Connection, rows: Sequence[Mapping[str, Any]], *, now: datetime
) -> list[int]:
    """Insert active wallets with fresh limit counters, each with a new account of kind
    ``wallet`` held at its operator: two batched statements. Each row holds the wallet's column
    values and ``account_code``; the rows of one call hold the same columns. Returns the new
    ``wallets.id`` values, in order."""
    if not rows:
        return []
    account_ids = connection.execute(
        insert(accounts).returning(accounts.c.id, sort_by_parameter_order=True),
        [{"code": row["account_code"], "kind": "wallet", "institution_id": row["operator_id"],
          "created_at": now} for row in rows],
    ).scalars().all()
    usage = Usage.fresh(now)
    fresh = {"status": "active", "usage_day": usage.day, "usage_year": usage.year,
             "spent_day_fen": 0, "spent_year_fen": 0, "created_at": now}
    wallet_rows = [
        {**{name: value for name, value in row.items() if name != "account_code"}, **fresh,
         "account_id": account_id}
        for row, account_id in zip(rows, account_ids, strict=True)
    ]
    return list(
        connection.execute(
            insert(wallets).returning(wallets.c.id, sort_by_parameter_order=True), wallet_rows
        ).scalars().all()
    )


def insert_keys(
    connection: Connection, keys: Sequence[tuple[str, int]], *, now: datetime
) -> None:
    """Enrol active keys, each ``(public key hex, wallets.id)``, in one batched statement."""
    if keys:
        connection.execute(
            insert(wallet_keys),
            [{"public_key": public_key, "wallet_id": wallet_row_id, "status": "active",
              "last_sequence": 0, "enrolled_at": now} for public_key, wallet_row_id in keys],
        )


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: int
    public_key: str
    wallet_row_id: int
    wallet_id: str
    status: str
    last_sequence: int


def load_keys(
    connection: Connection, public_keys_hex: Iterable[str], *, lock: bool = False
) -> dict[str, KeyRow]:
    """The enrolled keys among ``public_keys_hex``, by public key (unknown keys are left out);
    with ``lock`` their rows are locked (PostgreSQL) in ascending id order. Callers that also
    lock wallets lock those first."""
    wanted = sorted(set(public_keys_hex))
    if not wanted:
        return {}
    rows = _select_in(connection, _KEY_SELECT, "k", "public_key", wanted, lock)
    return {key.public_key: key for key in (KeyRow(*row) for row in rows)}


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
