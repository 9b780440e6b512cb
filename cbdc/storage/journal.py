"""The hot path: posting journal entries and their balance updates in the caller's transaction.

Order of work for a batch, all inside one transaction the service opened:

1. validate every draft (pure, :func:`cbdc.domain.postings.validate_draft`);
2. look up entry ids already recorded (idempotency: same content -> first result, else conflict);
3. lock the chain head (``FOR UPDATE`` on PostgreSQL; SQLite already holds its write lock from
   ``BEGIN IMMEDIATE``), then the touched accounts in ascending id order, so concurrent writers
   never deadlock;
4. apply the entries in order against running balances, refusing any that would overdraw an
   account (the database CHECK refuses it again if this code were wrong);
5. write entries, postings and balance deltas as three batched statements, and move the head.

Nothing here commits; the unit of work belongs to the service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from cbdc.domain.errors import CbdcError, EntryConflict, InsufficientFunds, NotFound
from cbdc.domain.postings import (
    EntryDraft,
    Posting,
    checked_metadata_json,
    entry_hash,
    format_timestamp,
    validate_draft,
)
from cbdc.storage.tables import journal_entries

NEGATIVE_ALLOWED_KINDS = frozenset({"issuance"})


@dataclass(frozen=True, slots=True)
class PostedEntry:
    """An entry as recorded. ``replayed`` is true when the entry id had been posted before."""

    seq: int
    entry_id: str
    kind: str
    created_at: datetime
    entry_hash: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class AccountState:
    id: int
    code: str
    kind: str
    balance_fen: int


# The hot path's statements, written once per dialect and sent straight to the driver: compiling
# Core constructs costs more per call than SQLite spends executing them (see LIMITS.md).
_STATEMENTS = {
    "insert_entries": "INSERT INTO journal_entries (seq, entry_id, kind, created_at, metadata_json,"
    " content_hash, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "insert_postings": "INSERT INTO postings (entry_seq, account_id, amount_fen) VALUES (?, ?, ?)",
    "update_balance": "UPDATE accounts SET balance_fen = balance_fen + ? WHERE id = ?",
    "move_head": "UPDATE ledger_head SET last_seq = ?, last_hash = ? WHERE id = 1",
    "read_head": "SELECT last_seq, last_hash FROM ledger_head WHERE id = 1",
}
_FORMAT = {name: sql.replace("?", "%s") for name, sql in _STATEMENTS.items()}


def _sql(connection: Connection, name: str) -> str:
    """The statement in the driver's own positional style (sqlite3: qmark; psycopg: format)."""
    return _STATEMENTS[name] if connection.dialect.name == "sqlite" else _FORMAT[name]


def _in_list(connection: Connection, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    mark = "?" if connection.dialect.name == "sqlite" else "%s"
    return ", ".join(mark for _ in values), tuple(values)


def post_entries(
    connection: Connection,
    drafts: Sequence[EntryDraft],
    *,
    now: datetime,
    atomic: bool = True,
) -> list[PostedEntry | CbdcError]:
    """Post ``drafts`` in order. With ``atomic`` the first refusal raises and nothing is written
    (the caller rolls back); without it, refused drafts come back as errors in their place and the
    others are posted."""
    results: list[PostedEntry | CbdcError | None] = [None] * len(drafts)
    fresh: list[tuple[int, EntryDraft]] = []
    for index, draft in enumerate(drafts):
        try:
            validate_draft(draft)
        except CbdcError as error:
            if atomic:
                raise
            results[index] = error
            continue
        fresh.append((index, draft))

    fresh = _resolve_repeats(connection, fresh, results, atomic=atomic)
    if fresh:
        _append(connection, fresh, results, now=now, atomic=atomic)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def post_entry(connection: Connection, draft: EntryDraft, *, now: datetime) -> PostedEntry:
    (result,) = post_entries(connection, [draft], now=now, atomic=True)
    assert isinstance(result, PostedEntry)
    return result


def _resolve_repeats(
    connection: Connection,
    fresh: list[tuple[int, EntryDraft]],
    results: list[PostedEntry | CbdcError | None],
    *,
    atomic: bool,
) -> list[tuple[int, EntryDraft]]:
    """Answer drafts whose entry id is already recorded; return the ones still to post."""
    if not fresh:
        return fresh
    ids = [draft.entry_id for _, draft in fresh]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise EntryConflict(f"entry id {duplicate} appears twice in one batch")
    placeholders, params = _in_list(connection, ids)
    found = connection.exec_driver_sql(
        f"SELECT entry_id FROM journal_entries WHERE entry_id IN ({placeholders})", params
    ).scalars().all()
    if not found:
        return fresh
    rows = connection.execute(
        select(
            journal_entries.c.seq,
            journal_entries.c.entry_id,
            journal_entries.c.kind,
            journal_entries.c.created_at,
            journal_entries.c.entry_hash,
            journal_entries.c.content_hash,
        ).where(journal_entries.c.entry_id.in_(found))
    ).all()
    recorded = {row.entry_id: row for row in rows}
    remaining = []
    for index, draft in fresh:
        row = recorded.get(draft.entry_id)
        if row is None:
            remaining.append((index, draft))
        elif row.content_hash == draft.content_hash():
            results[index] = PostedEntry(
                seq=row.seq,
                entry_id=row.entry_id,
                kind=row.kind,
                created_at=as_utc(row.created_at),
                entry_hash=row.entry_hash,
                replayed=True,
            )
        else:
            error = EntryConflict(
                f"entry {draft.entry_id} was already posted with different content",
                entry_id=draft.entry_id,
            )
            if atomic:
                raise error
            results[index] = error
    return remaining


def lock_accounts(connection: Connection, account_ids: Iterable[int]) -> dict[int, AccountState]:
    """Read (and on PostgreSQL lock) accounts in ascending id order."""
    ordered = sorted(set(account_ids))
    placeholders, params = _in_list(connection, ordered)
    sql = (
        f"SELECT id, code, kind, balance_fen FROM accounts WHERE id IN ({placeholders}) "
        "ORDER BY id"
    )
    if connection.dialect.name != "sqlite":
        sql += " FOR UPDATE"
    states = {
        row[0]: AccountState(*row) for row in connection.exec_driver_sql(sql, params)
    }
    missing = [account_id for account_id in ordered if account_id not in states]
    if missing:
        raise NotFound(f"account {missing[0]} does not exist", code="account_not_found")
    return states


def lock_head(connection: Connection) -> tuple[int, str]:
    """Read the chain head; on PostgreSQL lock it, which serialises writers of the chain."""
    sql = _sql(connection, "read_head")
    if connection.dialect.name != "sqlite":
        sql += " FOR UPDATE"
    last_seq, last_hash = connection.exec_driver_sql(sql).one()
    return int(last_seq), str(last_hash)


def _append(
    connection: Connection,
    fresh: list[tuple[int, EntryDraft]],
    results: list[PostedEntry | CbdcError | None],
    *,
    now: datetime,
    atomic: bool,
) -> None:
    last_seq, last_hash = lock_head(connection)
    states = lock_accounts(
        connection, (p.account_id for _, draft in fresh for p in draft.postings)
    )
    balances = {account_id: state.balance_fen for account_id, state in states.items()}
    created_at = as_utc(now)
    timestamp = format_timestamp(created_at)
    stored_at = stored_time(connection, created_at)
    entry_rows: list[tuple[Any, ...]] = []
    posting_rows: list[tuple[int, int, int]] = []
    deltas: dict[int, int] = {}
    for index, draft in fresh:
        try:
            metadata_json = checked_metadata_json(draft)
        except CbdcError as error:
            if atomic:
                raise
            results[index] = error
            continue
        refusal = _overdraft(draft.postings, balances, states)
        if refusal is not None:
            if atomic:
                raise refusal
            results[index] = refusal
            continue
        for posting in draft.postings:
            balances[posting.account_id] += posting.amount_fen
            deltas[posting.account_id] = deltas.get(posting.account_id, 0) + posting.amount_fen
        last_seq += 1
        this_hash = entry_hash(
            prev_hash=last_hash,
            seq=last_seq,
            entry_id=draft.entry_id,
            kind=draft.kind,
            created_at=created_at,
            timestamp=timestamp,
            metadata_json=metadata_json,
            postings=draft.postings,
        )
        entry_rows.append(
            (
                last_seq,
                draft.entry_id,
                draft.kind,
                stored_at,
                metadata_json,
                draft.content_hash(metadata_json),
                last_hash,
                this_hash,
            )
        )
        posting_rows.extend((last_seq, p.account_id, p.amount_fen) for p in draft.postings)
        results[index] = PostedEntry(
            seq=last_seq,
            entry_id=draft.entry_id,
            kind=draft.kind,
            created_at=created_at,
            entry_hash=this_hash,
        )
        last_hash = this_hash
    if not entry_rows:
        return
    connection.exec_driver_sql(_sql(connection, "insert_entries"), entry_rows)
    connection.exec_driver_sql(_sql(connection, "insert_postings"), posting_rows)
    balance_rows = [
        (delta, account_id) for account_id, delta in sorted(deltas.items()) if delta != 0
    ]
    if balance_rows:
        connection.exec_driver_sql(_sql(connection, "update_balance"), balance_rows)
    connection.exec_driver_sql(_sql(connection, "move_head"), (last_seq, last_hash))


def _overdraft(
    entry_postings: Sequence[Posting],
    balances: Mapping[int, int],
    states: Mapping[int, AccountState],
) -> InsufficientFunds | None:
    for posting in entry_postings:
        state = states[posting.account_id]
        if state.kind in NEGATIVE_ALLOWED_KINDS:
            continue
        after = balances[posting.account_id] + posting.amount_fen
        if after < 0:
            return InsufficientFunds(
                f"account {state.code} holds {balances[posting.account_id]} fen, "
                f"{-posting.amount_fen} fen requested",
                account=state.code,
                balance_fen=balances[posting.account_id],
                shortfall_fen=-after,
            )
    return None


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every ledger time is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def recorded_entries(
    connection: Connection, drafts: Sequence[EntryDraft]
) -> list[PostedEntry | CbdcError | None]:
    """For each draft (entry ids distinct): its first result if its entry id was posted with the
    same content, an EntryConflict if with other content, None if never posted. Services ask
    before their own checks so that a repeat returns the first result even when the checks
    would now fail."""
    results: list[PostedEntry | CbdcError | None] = [None] * len(drafts)
    _resolve_repeats(connection, list(enumerate(drafts)), results, atomic=False)
    return results


def recorded_entry(connection: Connection, draft: EntryDraft) -> PostedEntry | None:
    """:func:`recorded_entries` for one draft; the EntryConflict is raised."""
    (first,) = recorded_entries(connection, [draft])
    if isinstance(first, CbdcError):
        raise first
    return first


def stored_time(connection: Connection, moment: datetime) -> datetime | str:
    """A time as the database keeps it: SQLite as text in SQLAlchemy's own format (which its
    reader parses back: ``YYYY-MM-DD HH:MM:SS.ffffff``, the year always four digits), in UTC.
    ``isoformat`` writes exactly that, in C, about twice as fast as ``strftime``."""
    if connection.dialect.name == "sqlite":
        return as_utc(moment).replace(tzinfo=None).isoformat(" ", "microseconds")
    return moment
