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

from sqlalchemy import Connection, bindparam, select, update

from cbdc.domain.errors import CbdcError, EntryConflict, InsufficientFunds, NotFound
from cbdc.domain.postings import (
    EntryDraft,
    Posting,
    canonical_json,
    entry_hash,
    validate_draft,
)
from cbdc.storage.tables import accounts, journal_entries, ledger_head, postings

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


_update_balance = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(balance_fen=accounts.c.balance_fen + bindparam("delta_fen"))
)


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
    rows = connection.execute(
        select(
            journal_entries.c.seq,
            journal_entries.c.entry_id,
            journal_entries.c.kind,
            journal_entries.c.created_at,
            journal_entries.c.entry_hash,
            journal_entries.c.content_hash,
        ).where(journal_entries.c.entry_id.in_(ids))
    ).all()
    if not rows:
        return fresh
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
                created_at=_as_utc(row.created_at),
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
    query = (
        select(accounts.c.id, accounts.c.code, accounts.c.kind, accounts.c.balance_fen)
        .where(accounts.c.id.in_(ordered))
        .order_by(accounts.c.id)
    )
    if connection.dialect.name != "sqlite":
        query = query.with_for_update()
    states = {row.id: AccountState(*row) for row in connection.execute(query)}
    missing = [account_id for account_id in ordered if account_id not in states]
    if missing:
        raise NotFound(f"account {missing[0]} does not exist", code="account_not_found")
    return states


def lock_head(connection: Connection) -> tuple[int, str]:
    query = select(ledger_head.c.last_seq, ledger_head.c.last_hash).where(ledger_head.c.id == 1)
    if connection.dialect.name != "sqlite":
        query = query.with_for_update()
    row = connection.execute(query).one()
    return int(row.last_seq), str(row.last_hash)


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
    created_at = _as_utc(now)
    entry_rows: list[dict[str, Any]] = []
    posting_rows: list[dict[str, Any]] = []
    deltas: dict[int, int] = {}
    for index, draft in fresh:
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
            metadata=draft.metadata,
            postings=draft.postings,
        )
        entry_rows.append(
            {
                "seq": last_seq,
                "entry_id": draft.entry_id,
                "kind": draft.kind,
                "created_at": created_at,
                "metadata_json": canonical_json(dict(draft.metadata)).decode("ascii"),
                "content_hash": draft.content_hash(),
                "prev_hash": last_hash,
                "entry_hash": this_hash,
            }
        )
        posting_rows.extend(
            {"entry_seq": last_seq, "account_id": p.account_id, "amount_fen": p.amount_fen}
            for p in draft.postings
        )
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
    connection.execute(journal_entries.insert(), entry_rows)
    connection.execute(postings.insert(), posting_rows)
    balance_rows = [
        {"account_id": account_id, "delta_fen": delta}
        for account_id, delta in sorted(deltas.items())
        if delta != 0
    ]
    if balance_rows:
        connection.execute(_update_balance, balance_rows)
    connection.execute(
        update(ledger_head).where(ledger_head.c.id == 1).values(
            last_seq=last_seq, last_hash=last_hash
        )
    )


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


def _as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every ledger time is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def recorded_entry(connection: Connection, draft: EntryDraft) -> PostedEntry | None:
    """The first result if ``draft.entry_id`` was posted with the same content; None if never
    posted; EntryConflict if it was posted with other content. Services call this before their
    own checks so that a repeat returns the first result even when the checks would now fail."""
    results: list[PostedEntry | CbdcError | None] = [None]
    remaining = _resolve_repeats(connection, [(0, draft)], results, atomic=True)
    if remaining:
        return None
    result = results[0]
    assert isinstance(result, PostedEntry)
    return result
